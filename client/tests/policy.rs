//! The offline `imagesearch policy` command applies the shared rules and names the rule.

use std::process::Command;

fn policy(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagesearch")).arg("policy").args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn blocks_child_queries_in_restricted_regions_only() {
    let (ok, out, _) = policy(&["--restricted", "DE,FR", "--region", "de", "two kids on a slide"]);
    assert!(ok);
    assert!(out.starts_with("blocked: child word 'kids'"), "{out}");
    let (ok, out, _) = policy(&["--restricted", "DE,FR", "--region", "US", "two kids on a slide"]);
    assert!(ok && out.trim() == "allowed", "{out}");
    let (ok, out, _) = policy(&["--restricted", "DE,FR", "--region", "FR", "a young woman on a bench"]);
    assert!(ok && out.trim() == "allowed", "{out}");
}

#[test]
fn missing_region_fails_closed_and_bad_region_is_an_error() {
    let (ok, out, _) = policy(&["--restricted", "DE", "a 7-year-old plays"]);
    assert!(ok && out.starts_with("blocked: age 7"), "{out}");
    let (ok, _, err) = policy(&["--restricted", "DE", "--region", "DEU", "a dog"]);
    assert!(!ok && err.contains("DEU"), "{err}");
}
