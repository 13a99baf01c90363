//! Progress bars (indicatif): training (one bar over all optimizer steps) and the feature cache (one per modality),
//! each with rate and ETA.

use indicatif::{ProgressBar, ProgressStyle};
use m6rec_train::{EpochRecord, Observer, TrainState};

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
        self.bar.set_message(format!("epoch {epoch}/{} loss {:.4}", self.n_epochs, self.last_loss));
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
