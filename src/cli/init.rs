//! `switchyard init NAME`: a folder with a small working HTTP service that
//! deploys as it is, as local processes or as a container.
//!
//! The service is Python with the standard library only, so it runs
//! wherever `python3` does; its image is built on a base image that has
//! `python3` (an official slim one unless `--base-image` says otherwise).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;

use crate::model::{MANIFEST_FILE, ServiceName};

/// The base image of the generated Dockerfile unless `--base-image` names another.
pub const DEFAULT_BASE_IMAGE: &str = "python:3.12-slim";

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Service name: 1 to 63 of a-z, 0-9 and '-'.
    pub name: String,
    /// Base image of the Dockerfile; it must have python3.
    #[arg(long, default_value = DEFAULT_BASE_IMAGE)]
    pub base_image: String,
    /// Folder to create (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let name: ServiceName = args.name.parse()?;
    let base = args.base_image.trim();
    if base.is_empty() || base.contains(char::is_whitespace) {
        bail!("--base-image takes one image name such as python:3.12-slim, got `{base}`");
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| Path::new(".").join(name.as_str()));
    let occupied = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        bail!(
            "{} already exists and is not empty; choose another folder with --dir, or remove it",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (file, text) in scaffold(name.as_str(), base) {
        write(&dir, file, &text)?;
    }
    let shown = dir.display();
    println!("created {shown}: app.py, {MANIFEST_FILE}, Dockerfile, README.md");
    println!("deploy it (with `switchyard serve` running):");
    println!("  switchyard deploy {name} 1.0.0 {shown} --process   # as local processes (python3)");
    println!(
        "  switchyard deploy {name} 1.0.0 {shown}             # as a container (Docker, base image {base})"
    );
    Ok(())
}

fn write(dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The files of a new project, by name.
fn scaffold(name: &str, base: &str) -> [(&'static str, String); 4] {
    [
        ("app.py", APP.replace("{name}", name)),
        (MANIFEST_FILE, MANIFEST.replace("{name}", name)),
        (
            "Dockerfile",
            DOCKERFILE.replace("{name}", name).replace("{base}", base),
        ),
        (
            "README.md",
            README.replace("{name}", name).replace("{base}", base),
        ),
    ]
}

const APP: &str = r#""""{name}: a small HTTP service made by `switchyard init`.

GET /healthz answers 200 (Switchyard's health check); GET / says which
version and instance answered. Switchyard gives each instance its port in
PORT. Standard library only: it runs wherever python3 does.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE = "{name}"
VERSION = os.environ.get("SWITCHYARD_VERSION", "dev")
INSTANCE = os.environ.get("SWITCHYARD_INSTANCE", "0")
GREETING = os.environ.get("GREETING", "Hello")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.answer(200, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/":
            body = {
                "service": SERVICE,
                "version": VERSION,
                "instance": INSTANCE,
                "message": f"{GREETING} from {SERVICE} {VERSION}",
            }
            self.answer(200, "application/json", (json.dumps(body) + "\n").encode())
        else:
            self.answer(404, "text/plain; charset=utf-8", b"not found\n")

    def answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stdout.write(f"{self.command} {self.path} {fmt % args}\n")
        sys.stdout.flush()


def main():
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    # Switchyard drains traffic away before it sends SIGTERM. As the first
    # process of a container, Python must handle SIGTERM itself to stop.
    stop = lambda *_: threading.Thread(target=server.shutdown).start()
    signal.signal(signal.SIGTERM, stop)
    print(f"{SERVICE} {VERSION} listening on {host}:{port}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
"#;

const MANIFEST: &str = r#"# How Switchyard runs {name}; `switchyard deploy {name} VERSION FOLDER` reads it.
name = "{name}"
# version = "1.0.0"                # optional: when set, deploy checks it matches
command = ["python3", "app.py"]    # runs in this folder; PORT holds the port
replicas = 1

[env]
GREETING = "Hello"

[health]
path = "/healthz"
"#;

const DOCKERFILE: &str = r#"# The image `switchyard deploy {name} VERSION FOLDER` builds (switchyard/{name}:VERSION).
FROM {base}
WORKDIR /app
COPY app.py .
# Listen on every interface inside the container; Switchyard publishes the
# port on 127.0.0.1 only.
ENV HOST=0.0.0.0 PORT=8080 PYTHONUNBUFFERED=1
EXPOSE 8080
CMD ["python3", "app.py"]
"#;

const README: &str = r#"# {name}

A small HTTP service made by `switchyard init`: `app.py` (Python, standard
library only) answers `GET /healthz` and `GET /`.

| file | what it is |
|---|---|
| `app.py` | the service; it listens on `$PORT` |
| `switchyard.toml` | how Switchyard runs it as local processes: command, replicas, environment, health check |
| `Dockerfile` | how it is built into an image (base image `{base}`) |

With `switchyard serve` running:

```sh
# as local processes (needs python3)
switchyard deploy {name} 1.0.0 . --process
# as a container: builds switchyard/{name}:1.0.0 on the Docker Engine (needs the base image)
switchyard deploy {name} 1.0.0 .

curl localhost:8080/services/{name}/
switchyard ls {name}
switchyard logs {name} 1.0.0
```

A new version: change `app.py`, then `switchyard deploy {name} 1.1.0 .`
(it enters as a shadow) and `switchyard assign {name} 1.1.0` to switch.
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Manifest;

    #[test]
    fn the_scaffold_names_the_service_and_base_image() {
        let files = scaffold("hello", "my/python:3");
        let text = |file: &str| {
            files
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, t)| t.clone())
                .expect("file")
        };
        assert!(text("app.py").contains(r#"SERVICE = "hello""#));
        assert!(text("Dockerfile").contains("FROM my/python:3\n"));
        assert!(text("README.md").contains("switchyard deploy hello 1.0.0 ."));
        let manifest = Manifest::parse(&text(MANIFEST_FILE)).expect("the manifest is valid");
        assert_eq!(manifest.name.as_deref(), Some("hello"));
        assert_eq!(manifest.health_check().expect("health").path, "/healthz");
        assert!(manifest.check_identity("hello", "2.0.0").is_ok());
    }

    #[test]
    fn init_refuses_a_folder_that_is_not_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("keep.txt"), "mine").expect("write");
        let args = InitArgs {
            name: "hello".into(),
            base_image: DEFAULT_BASE_IMAGE.into(),
            dir: Some(dir.path().to_path_buf()),
        };
        let error = run(args).expect_err("not empty");
        assert!(error.to_string().contains("not empty"), "{error}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).expect("kept"),
            "mine"
        );
    }
}
