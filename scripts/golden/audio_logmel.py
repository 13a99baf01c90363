"""Golden log-mel spectrogram of a real clip, as librosa computes it.

Makes fixtures/golden/logmel_brahms.json, read by crates/m6rec-audio/tests/golden.rs (which needs no Python).
The clip is fixtures/audio/brahms.ogg (Brahms, Hungarian Dance No. 5, US Army Strings: public domain; see brahms.txt).
Run from the repository root in an environment with `pip install librosa soundfile`:

    ~/.cache/m6rec/pyenv-bench/bin/python scripts/golden/audio_logmel.py
"""
import json

import librosa
import numpy as np
import soundfile as sf

SECONDS = 3.0
SR = 22050  # the clip's own rate: this checks decoding + STFT + mel + dB, not resampling
N_FFT, HOP, N_MELS, TOP_DB = 2048, 512, 64, 80.0

y, sr = sf.read("fixtures/audio/brahms.ogg", dtype="float32", always_2d=True)
y = y.mean(axis=1)
assert sr == SR, sr
n = int(round(SECONDS * SR))
y = np.pad(y[:n], (0, max(0, n - len(y))))
S = librosa.feature.melspectrogram(y=y, sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0)
db = librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=TOP_DB)
out = {
    "source": "librosa %s, soundfile %s (libsndfile %s)" % (librosa.__version__, sf.__version__, sf.__libsndfile_version__),
    "script": "scripts/golden/audio_logmel.py",
    "clip": "fixtures/audio/brahms.ogg",
    "config": {"sample_rate": SR, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "seconds": SECONDS, "top_db": TOP_DB},
    "first_samples": [round(float(v), 8) for v in y[:64]],
    "shape": list(db.shape),
    "log_mel": [[round(float(v), 4) for v in row] for row in db],
}
with open("fixtures/golden/logmel_brahms.json", "w") as f:
    json.dump(out, f)
    f.write("\n")
print("wrote fixtures/golden/logmel_brahms.json:", db.shape, float(db.max()), float(db.min()))
