//! serve started under a low open-files limit (`prlimit`, from
//! util-linux), as an operator's system with the common default of 1,024
//! would start it.

use super::Env;

impl Env {
    /// Starts serve on free ports through `prlimit --nofile=SOFT:HARD`
    /// and waits until it prints its addresses; returns what it printed
    /// up to then.
    pub async fn launch_with_file_limit(&mut self, soft: u64, hard: u64) -> Vec<String> {
        self.launcher = vec![
            "prlimit".to_owned(),
            format!("--nofile={soft}:{hard}"),
            "--".to_owned(),
        ];
        self.launch("127.0.0.1:0", "127.0.0.1:0").await;
        self.serve().banner.clone()
    }
}
