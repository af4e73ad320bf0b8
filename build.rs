//! Records the git commit the binary is built from, for `secretguard_build_info{revision}`
//! and `secretguard --version`: SECRETGUARD_REVISION if set (an image build, which has no
//! .git: deploy/Dockerfile passes its REVISION build argument), else `git rev-parse HEAD`,
//! else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SECRETGUARD_REVISION");
    // A new commit moves HEAD or the branch it names.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{branch}");
        println!("cargo:rerun-if-changed=.git/packed-refs");
    }
    let revision = std::env::var("SECRETGUARD_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SECRETGUARD_REVISION={revision}");
}

fn git_head() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !rev.is_empty()).then_some(rev)
}
