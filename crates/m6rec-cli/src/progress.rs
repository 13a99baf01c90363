//! Progress bars (indicatif): training (one bar over all optimizer steps) and the feature cache (one per modality),
//! each with rate and ETA. When stderr is not a terminal (a scheduler's log, CI) the bars do not draw; [`plain`]
//! prints a plain line with the same numbers every few seconds instead (`M6REC_PROGRESS_SECS`, default 10).

use indicatif::{ProgressBar, ProgressStyle};
use m6rec_train::{EpochRecord, Observer, TrainState};

/// Seconds between plain progress lines.
fn plain_interval() -> std::time::Duration {
    let secs = std::env::var("M6REC_PROGRESS_SECS").ok().and_then(|v| v.trim().parse::<f64>().ok());
    std::time::Duration::from_secs_f64(secs.filter(|s| s.is_finite() && *s >= 0.1).unwrap_or(10.0).min(3600.0))
}

/// When stderr is not a terminal, a thread that prints `label: pos/len unit (rate/s, ETA, elapsed)` for `bar` every
/// few seconds until it finishes or is dropped. A terminal gets the bar itself.
pub fn plain(bar: &ProgressBar, label: &str, unit: &'static str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        return;
    }
    let (weak, label, every) = (bar.downgrade(), label.to_string(), plain_interval());
    let spawned = std::thread::Builder::new().name("progress".into()).spawn(move || loop {
        std::thread::sleep(every);
        let Some(bar) = weak.upgrade() else { return };
        if bar.is_finished() {
            return;
        }
        let elapsed = bar.elapsed().as_secs_f64();
        let msg = bar.message();
        let what = [label.as_str(), msg.as_ref()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
        let line = match bar.length().filter(|&l| l > 0) {
            Some(len) => format!(
                "{what}: {}/{len} {unit} ({:.1}/s, ETA {:.0}s, {elapsed:.0}s elapsed)",
                bar.position(),
                bar.per_sec(),
                bar.eta().as_secs_f64()
            ),
            None => format!("{what}: {elapsed:.0}s elapsed"),
        };
        eprintln!("{line}");
    });
    // Without the thread the run goes on, only quieter.
    drop(spawned);
}

/// A spinner with a message and the time elapsed.
pub fn spinner(msg: String) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(msg);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    plain(&bar, "", "");
    bar
}

pub struct TrainProgress {
    bar: ProgressBar,
    n_epochs: usize,
    last_loss: f64,
}

impl TrainProgress {
    pub fn new(n_epochs: usize, start_epoch: usize) -> TrainProgress {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} train [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} (upper bound: early stopping) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("epoch {}", start_epoch + 1));
        plain(&bar, "train", "steps");
        TrainProgress { bar, n_epochs, last_loss: f64::NAN }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for TrainProgress {
    fn epoch_start(&mut self, epoch: usize, n_batches: usize) {
        if self.bar.length() == Some(0) {
            let remaining = (self.n_epochs + 1).saturating_sub(epoch);
            self.bar.set_length((remaining * n_batches) as u64);
            self.bar.reset_eta();
        }
        let loss = if self.last_loss.is_finite() { format!(" loss {:.4}", self.last_loss) } else { String::new() };
        self.bar.set_message(format!("epoch {epoch}/{}{loss}", self.n_epochs));
    }

    fn batch_end(&mut self, loss: f64, _n_seqs: usize) {
        self.last_loss = loss;
        self.bar.inc(1);
    }

    fn epoch_end(&mut self, r: &EpochRecord, s: &TrainState) {
        let valid = r.valid_ndcg10.map(|v| format!(" valid NDCG@10 {v:.4}")).unwrap_or_default();
        let line = format!(
            "epoch {:>3}  loss {:.4}{valid}  best {:.4} @ {}  {:.0} seq/s  {:.0} tok/s  padding {:.0}%  {:.0}s",
            r.epoch,
            r.loss,
            s.best_ndcg10,
            s.best_epoch,
            r.seqs_per_sec,
            r.tokens_per_sec,
            r.padding * 100.0,
            r.elapsed
        );
        self.say(line);
    }

    fn on_replan(&mut self, epochs: usize) {
        // The bar's length is set again from the next epoch's batches.
        self.n_epochs = epochs;
        self.bar.set_length(0);
        self.say(format!("train.replan: train.epochs = {epochs}, from the measured epoch time and train.max_seconds"));
    }
}

impl TrainProgress {
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            // Not a terminal (a log file, CI): print plain lines instead of a bar.
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// One bar per modality while `m6rec features` decodes media.
pub struct FeatureProgress {
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl FeatureProgress {
    pub fn new() -> FeatureProgress {
        FeatureProgress { bar: std::sync::Mutex::new(None) }
    }
}

impl m6rec_features::Progress for FeatureProgress {
    fn start(&self, modality: &str, total: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {modality:<6} [{{bar:30}}] {{pos}}/{{len}} files {{per_sec}} ETA {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        plain(&bar, &format!("features {modality}"), "files");
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, n: u64) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.inc(n);
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        }
    }
}
