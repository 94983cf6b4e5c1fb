include!("../scripts/torch_link.rs");
