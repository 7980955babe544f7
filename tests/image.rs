//! The container image `make image` builds (scripts/image.sh): unpacked with `umoci unpack
//! --rootless`, its entrypoint runs from the unpacked root filesystem — in a chroot whose root is
//! mounted read-only with a tmpfs on /tmp, as the chart runs it — so a missing library, CA bundle,
//! user or shell fails here and not on a node.
//!
//! Ignored unless asked for: `make image` runs it with ROLEGATE_IMAGE=target/image:VERSION (an
//! OCI layout and tag) under scripts/with-moto.sh. Needs umoci, unshare and chroot, as root or
//! with unprivileged user namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ENTRYPOINT: &str = "/usr/local/bin/rolegate";
const USER: u32 = 65532;
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The layout and tag named by ROLEGATE_IMAGE (`DIR[:TAG]`, the tag defaulting to the crate's
/// version).
fn image() -> (PathBuf, String) {
    let spec = std::env::var("ROLEGATE_IMAGE").expect(
        "ROLEGATE_IMAGE is not set: run `make image`, which builds the image and this test",
    );
    let (dir, tag) = match spec.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => (dir.to_string(), tag.to_string()),
        _ => (spec, env!("CARGO_PKG_VERSION").to_string()),
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    assert!(
        dir.join("index.json").is_file(),
        "{} is not an OCI layout",
        dir.display()
    );
    (dir, tag)
}

/// The image unpacked once for every test of a run: the runtime bundle (config.json and
/// rootfs/).
fn bundle() -> &'static Path {
    static BUNDLE: OnceLock<PathBuf> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let (dir, tag) = image();
        // Under target/tmp, replaced by the next run, so runs do not pile up unpacked images.
        let bundle = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-bundle");
        if bundle.exists() {
            std::fs::remove_dir_all(&bundle).unwrap();
        }
        let out = Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{tag}", dir.display()))
            .arg(&bundle)
            .output()
            .expect("umoci (apt-get install -y umoci)");
        assert!(out.status.success(), "umoci unpack: {}", text(&out.stderr));
        // What a ConfigMap mount would give the pod: the standalone example's resources.
        let config = bundle.join("rootfs/etc/rolegate/config");
        std::fs::create_dir_all(&config).unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/standalone");
        copy_dir(&example, &config);
        bundle
    })
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    text(&out.stdout).trim() == "0"
}

/// A command that runs `args` inside the unpacked image, in new mount (and, with `own_network`,
/// network) namespaces: the root filesystem bind-mounted read-only, a tmpfs on /tmp, the host's
/// /dev and /proc, and only the image's environment. As root it runs as the image's user unless
/// `as_root`; without root, in a user namespace as its (mapped) root.
fn in_image(args: &[&str], as_root: bool, own_network: bool, env: &[(&str, &str)]) -> Command {
    let rootfs = bundle().join("rootfs");
    let root = is_root();
    let mut unshare = Command::new("unshare");
    if !root {
        unshare.arg("--map-root-user");
    }
    unshare.arg("--mount");
    if own_network {
        unshare.arg("--net");
    }
    let userspec = if root && !as_root {
        format!("--userspec={USER}:{USER}")
    } else {
        String::new()
    };
    let script = format!(
        r#"set -eu
r="$1"; shift
mount --bind "$r" "$r"
mount --rbind /dev "$r/dev"
mount --rbind /proc "$r/proc"
mount -o remount,bind,ro "$r"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
exec chroot {userspec} "$r" "$@""#
    );
    unshare
        .args(["sh", "-c", &script, "in-image"])
        .arg(&rootfs)
        .args(args)
        .env_clear()
        .env("PATH", PATH.trim_start_matches("PATH="));
    for (k, v) in env {
        unshare.env(k, v);
    }
    unshare
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The OCI image configuration (`config` of the tag's manifest).
fn image_config() -> serde_json::Value {
    let (dir, tag) = image();
    let read = |digest: &str| -> serde_json::Value {
        let path = dir.join("blobs").join(digest.replacen(':', "/", 1));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag.as_str())
        .unwrap_or_else(|| panic!("no tag {tag} in {}", dir.display()));
    let manifest = read(manifest["digest"].as_str().unwrap());
    read(manifest["config"]["digest"].as_str().unwrap())
}

#[test]
#[ignore = "needs the image: `make image` runs it with ROLEGATE_IMAGE"]
fn image_runs_as_non_root_with_the_binary_as_entrypoint() {
    let config = image_config();
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["User"], format!("{USER}:{USER}"));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!([ENTRYPOINT])
    );
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "rolegate");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{labels}"
    );
    // The runtime bundle umoci generated from it runs the same process.
    let runtime: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle().join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["user"]["uid"], USER);
    assert_eq!(runtime["process"]["args"][0], ENTRYPOINT);
    let passwd = std::fs::read_to_string(bundle().join("rootfs/etc/passwd")).unwrap();
    assert!(passwd.contains(&format!(":{USER}:{USER}:")), "{passwd}");
}

#[test]
#[ignore = "needs the image: `make image` runs it with ROLEGATE_IMAGE"]
fn entrypoint_prints_its_version_from_the_image() {
    let out = run(&mut in_image(&[ENTRYPOINT, "--version"], false, false, &[]));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("rolegate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
#[ignore = "needs the image: `make image` runs it with ROLEGATE_IMAGE"]
fn image_has_the_ca_bundle_the_aws_sdk_reads() {
    let bundle_path = bundle().join("rootfs/etc/ssl/certs/ca-certificates.crt");
    let pem = std::fs::read_to_string(&bundle_path).unwrap();
    let certs = pem.matches("-----BEGIN CERTIFICATE-----").count();
    assert!(
        certs > 100,
        "{certs} certificates in {}",
        bundle_path.display()
    );
    // Amazon's roots, which sts.amazonaws.com and iam.amazonaws.com chain to.
    let names = std::fs::read_dir(bundle().join("rootfs/usr/share/ca-certificates/mozilla"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        names.iter().any(|n| n.starts_with("Amazon_Root_CA_1")),
        "{names:?}"
    );
}

/// The agent's init container (charts/rolegate/templates/agent.yaml) runs `/bin/sh -ec` with
/// iproute2's `ip` from this image to add the link-local addresses. The dummy link type may be
/// missing from the kernel the test runs on, so the addresses go on a fresh namespace's loopback.
#[test]
#[ignore = "needs the image: `make image` runs it with ROLEGATE_IMAGE"]
fn agent_init_shell_and_ip_work_from_the_image() {
    let script = "ip link set lo up
ip addr replace 169.254.170.23/32 dev lo
ip -6 addr replace fd00:ec2::23/128 dev lo
ip addr show dev lo";
    let out = run(&mut in_image(&["/bin/sh", "-ec", script], true, true, &[]));
    let shown = text(&out.stdout);
    assert!(shown.contains("169.254.170.23/32"), "{shown}");
    assert!(shown.contains("fd00:ec2::23/128"), "{shown}");
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `rolegate serve` from the image, on the read-only root, with the standalone example: it
/// answers /healthz, and (with moto, under `make image`) registers the IdP and becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image: `make image` runs it with ROLEGATE_IMAGE"]
async fn serve_from_the_image_answers_health_on_a_read_only_root() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let moto = std::env::var("ROLEGATE_TEST_MOTO").ok();
    let mut env = vec![
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("RUST_LOG", "info"),
    ];
    if let Some(moto) = &moto {
        env.push(("AWS_ENDPOINT_URL", moto));
    }
    let log = tempfile::NamedTempFile::new().unwrap();
    let args = [
        ENTRYPOINT,
        "serve",
        "--config",
        "/etc/rolegate/config",
        "--state-dir",
        "/tmp/state",
        "--listen",
        &listen,
    ];
    let child = in_image(&args, false, false, &env)
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut serving = Serving(child);
    let url = format!("http://{listen}");
    let ready = |path: &'static str| {
        let url = format!("{url}{path}");
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wanted = vec!["/healthz"];
    if moto.is_some() {
        wanted.push("/readyz");
    }
    for path in wanted {
        while !ready(path).await {
            if let Some(status) = serving.0.try_wait().unwrap() {
                panic!(
                    "serve exited with {status}: {}",
                    std::fs::read_to_string(log.path()).unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not answer 200: {}",
                std::fs::read_to_string(log.path()).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        serving.0.try_wait().unwrap().is_none(),
        "serve stopped after answering"
    );
}
