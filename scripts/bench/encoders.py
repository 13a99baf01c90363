"""Encoder throughput, the Python side of `cargo xtask bench encoders`: the pipeline a user would otherwise write.

Images: Pillow + torchvision (Resize(146), CenterCrop(128), ToTensor, Normalize) in a torch DataLoader with
`--threads` worker processes. Audio: librosa.load(sr=16000) + melspectrogram(n_fft=2048, hop=512, n_mels=64) +
power_to_db, over a multiprocessing pool of `--threads` processes. Text: sentence-transformers all-MiniLM-L6-v2,
encode(batch_size=32) with torch limited to `--threads` threads. Prints one JSON object.
"""
import argparse
import json
import multiprocessing as mp
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--images", required=True)
parser.add_argument("--audio", required=True)
parser.add_argument("--texts", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--max-texts", type=int, default=1000)
args = parser.parse_args()


def listing(d, exts):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.lower().rsplit(".", 1)[-1] in exts)


def audio_one(path):
    import librosa
    import numpy as np

    y, sr = librosa.load(path, sr=16000)
    s = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512, n_mels=64)
    db = librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=80.0)
    assert db.shape[1] > 0 and np.isfinite(db).all()
    return len(y) / sr


def main():
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    torch.set_num_threads(args.threads)
    tf = transforms.Compose([
        transforms.Resize(146), transforms.CenterCrop(128), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])

    class Files(Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            return tf(Image.open(self.paths[i]).convert("RGB"))

    images = listing(args.images, {"jpg", "jpeg", "png", "webp", "gif"})
    loader = DataLoader(Files(images), batch_size=64, num_workers=args.threads)
    runs = []
    for _ in range(3):  # median of three passes, as the Rust side does
        t = time.perf_counter()
        n = sum(batch.shape[0] for batch in loader)
        runs.append(time.perf_counter() - t)
    image_seconds = sorted(runs)[1]

    clips = listing(args.audio, {"ogg", "mp3", "flac", "wav"})
    with mp.get_context("fork").Pool(args.threads) as pool:
        pool.map(audio_one, clips[:1])  # import librosa and numba once per worker, outside the timing
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            audio_seconds = sum(pool.map(audio_one, clips))
            runs.append(time.perf_counter() - t)
        audio_wall = sorted(runs)[1]

    from sentence_transformers import SentenceTransformer

    with open(args.texts, encoding="utf-8") as f:
        texts = [l.rstrip("\n").split("\t", 1)[1] for l in f.readlines()[1:] if "\t" in l][: args.max_texts]
    model = SentenceTransformer(args.model, device="cpu")
    t = time.perf_counter()
    emb = model.encode(texts, batch_size=32, convert_to_numpy=True)
    text_seconds = time.perf_counter() - t
    assert emb.shape[0] == len(texts)

    print(json.dumps({
        "threads": args.threads, "images": len(images), "images_ok": n, "image_seconds": image_seconds,
        "images_per_sec": n / image_seconds, "audio_clips": len(clips), "audio_seconds": audio_seconds,
        "audio_wall_seconds": audio_wall, "audio_seconds_per_sec": audio_seconds / audio_wall,
        "texts": len(texts), "text_seconds": text_seconds, "sentences_per_sec": len(texts) / text_seconds,
    }))


if __name__ == "__main__":
    main()
