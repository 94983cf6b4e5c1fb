//! A lever measured, not shipped: the photo child detector as a small MLP (one hidden ReLU layer)
//! instead of logistic regression, on the same standardised vectors, split and threshold rule.
//! It answers whether the linear read-out, not the features, limits the detector; its figures go
//! to the manifest (`child_detector.metrics.mlp_probe`) and the log.

use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::detector::{design, roc_auc, threshold_for_recall, Confusion, DetectorConfig, Example};

/// Hidden widths and L2 penalties tried; the best validation ROC AUC wins.
const HIDDEN: [i64; 2] = [64, 256];
const DECAYS: [f64; 3] = [1e-4, 1e-3, 1e-2];
const STEPS: usize = 400;
const LR: f64 = 1e-3;

fn probabilities(model: &impl Module, x: &Tensor) -> Vec<f32> {
    tch::no_grad(|| Vec::<f32>::try_from(model.forward(x).squeeze_dim(1).sigmoid()).unwrap_or_default())
}

/// Trains one MLP: class-weighted logistic loss, full-batch Adam, fixed seed.
fn fit(x: &Tensor, y: &[bool], hidden: i64, decay: f64, seed: u64) -> (nn::VarStore, nn::Sequential) {
    tch::manual_seed(seed as i64);
    let n = y.len() as f64;
    let pos = y.iter().filter(|&&p| p).count() as f64;
    let (wp, wn) = ((n / (2.0 * pos)) as f32, (n / (2.0 * (n - pos))) as f32);
    let target = Tensor::from_slice(&y.iter().map(|&p| f32::from(u8::from(p))).collect::<Vec<_>>());
    let weight = Tensor::from_slice(&y.iter().map(|&p| if p { wp } else { wn }).collect::<Vec<_>>());
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let model = nn::seq()
        .add(nn::linear(&root / "hidden", x.size()[1], hidden, Default::default()))
        .add_fn(|t| t.relu())
        .add(nn::linear(&root / "out", hidden, 1, Default::default()));
    let Ok(mut opt) = nn::Adam::default().build(&vs, LR) else { return (vs, model) };
    for _ in 0..STEPS {
        let z = model.forward(x).squeeze_dim(1);
        let data = ((z.softplus() - &target * &z) * &weight).mean(Kind::Float);
        let l2: Tensor = vs.trainable_variables().iter().map(|v| v.square().sum(Kind::Float)).sum();
        opt.backward_step(&(data + l2 * (0.5 * decay)));
    }
    (vs, model)
}

/// The MLP's figures next to the shipped detector's: the grid's validation AUCs, the chosen
/// setting, and at the validation threshold for `cfg.target_recall` the confusion on the held-out
/// photos and on each extra group.
pub fn probe(
    cfg: &DetectorConfig,
    train: &[&Example],
    val: &[&Example],
    heldout: &[&Example],
    extra: &[(&str, &[Example])],
    mean: &[f32],
    scale: &[f32],
) -> serde_json::Value {
    let y: Vec<bool> = train.iter().map(|e| e.positive).collect();
    let val_y: Vec<bool> = val.iter().map(|e| e.positive).collect();
    if !y.contains(&true) || !y.contains(&false) || !val_y.contains(&true) {
        return serde_json::json!({ "skipped": "a split lacks positives or negatives" });
    }
    let (x, val_x) = (design(train, mean, scale), design(val, mean, scale));
    let mut grid = serde_json::Map::new();
    let mut best: Option<(f64, i64, f64, nn::VarStore, nn::Sequential)> = None;
    for hidden in HIDDEN {
        for decay in DECAYS {
            let (vs, model) = fit(&x, &y, hidden, decay, cfg.seed);
            let auc = roc_auc(&probabilities(&model, &val_x), &val_y).unwrap_or(f64::NEG_INFINITY);
            tracing::info!("child detector MLP probe: hidden {hidden}, weight decay {decay:e}: validation ROC AUC {auc:.4}");
            grid.insert(format!("hidden {hidden}, decay {decay:e}"), serde_json::json!(auc));
            if best.as_ref().is_none_or(|b| auc > b.0) {
                best = Some((auc, hidden, decay, vs, model));
            }
        }
    }
    let Some((_, hidden, decay, _vs, model)) = best else { return serde_json::Value::Null };
    let val_scores = probabilities(&model, &val_x);
    let val_pos: Vec<f32> = val_scores.iter().zip(&val_y).filter(|(_, &p)| p).map(|(&s, _)| s).collect();
    let threshold = threshold_for_recall(&val_pos, cfg.target_recall).unwrap_or(0.0);
    let mut groups = serde_json::Map::new();
    let named: Vec<(&str, Vec<&Example>)> = std::iter::once(("heldout", heldout.to_vec()))
        .chain(extra.iter().map(|(n, rows)| (*n, rows.iter().collect())))
        .collect();
    for (name, rows) in named {
        let labels: Vec<bool> = rows.iter().map(|e| e.positive).collect();
        let c = Confusion::at(&probabilities(&model, &design(&rows, mean, scale)), &labels, threshold);
        tracing::info!("child detector MLP probe, {name}: {}", c.line());
        groups.insert(name.to_string(), serde_json::to_value(&c).unwrap_or_default());
    }
    serde_json::json!({
        "model": "MLP: standardised vector, one hidden ReLU layer, one logit; class-weighted logistic loss, L2, full-batch Adam",
        "steps": STEPS, "lr": LR, "hidden": hidden, "weight_decay": decay,
        "validation_auc": grid, "threshold": threshold, "groups": groups,
    })
}
