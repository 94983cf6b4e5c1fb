//! The optional image encoder `efficientnet-lite0-lite2` (EfficientNet-Lite0 ⊕ Lite2, 260 px in,
//! 2,560-d out) trains and serves through its manifest alone: the real trainer makes a version
//! on it and the real server indexes, scores and searches with it.

use imagesearch_tests::{assert_serves_a_version_on, encoders};

#[test]
fn a_version_on_the_lite_pair_is_served_unchanged() {
    assert_serves_a_version_on(&encoders(), "efficientnet-lite0-lite2", "minilm-l6-v2", 3);
}
