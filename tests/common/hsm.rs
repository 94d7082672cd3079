//! A SoftHSM2 token store of its own (never the system's): one directory
//! with `softhsm2.conf` and its tokens, made with `softhsm2-util
//! --init-token`. writ sees it through `SOFTHSM2_CONF` in the environment
//! of the commands a test runs.

use std::path::PathBuf;

/// SoftHSM2's PKCS#11 module as Debian installs it.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The label of the token every [`SoftHsm`] starts with.
pub const TOKEN: &str = "writ-test";
/// The user PIN of every token made here.
pub const PIN: &str = "4711-user-pin";
/// The security officer's PIN of every token made here.
pub const SO_PIN: &str = "so-pin-0815";

/// A token store with one initialised token, [`TOKEN`].
pub struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    #[track_caller]
    pub fn new() -> SoftHsm {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
        let hsm = SoftHsm { dir };
        hsm.init_token(TOKEN);
        hsm
    }

    /// The `SOFTHSM2_CONF` file.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// A file holding [`PIN`], for `--pin-file` / `WRIT_PIN_FILE`.
    pub fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }

    #[track_caller]
    pub fn init_token(&self, label: &str) {
        let out = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", self.conf())
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ])
            .output()
            .expect("run softhsm2-util (scripts/install-deps installs softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Takes every token away (as if the HSM were unplugged).
    pub fn remove_tokens(&self) {
        let tokens = self.dir.path().join("tokens");
        std::fs::remove_dir_all(&tokens).unwrap();
        std::fs::create_dir(&tokens).unwrap();
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        SoftHsm::new()
    }
}
