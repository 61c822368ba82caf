//! kubectl, unmodified, against the apiserver: the commands users type, and what they print.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::TestServer;

/// The lines a running command prints, as they come.
struct Lines {
    lines: std::sync::mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
}

impl Lines {
    fn of(output: impl std::io::Read + Send + 'static) -> Self {
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            lines,
            seen: std::cell::RefCell::default(),
        }
    }

    /// Waits (bounded) for a line that `want` accepts and returns it.
    fn wait_for(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => self.seen.borrow_mut().push(line),
                Err(e) => panic!("no such line ({e}); printed: {:?}", self.seen.borrow()),
            }
        }
    }
}

struct Kubectl {
    kubeconfig: std::path::PathBuf,
    cache: std::path::PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("kubectl");
        command
            .args(args)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs kubectl (bounded), feeding `stdin`; returns its output whatever the exit status.
    fn run_with(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.command(args).spawn().expect("kubectl is installed");
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            input.write_all(stdin.as_bytes()).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "kubectl {args:?} hung"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns stdout; fails the test on a non-zero exit.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, "")
    }

    fn ok_with(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run_with(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

const MANIFEST: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: demo
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: api
        image: skiff/test-server
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: demo
spec:
  selector: {app: api}
  ports:
  - name: http
    port: 80
    targetPort: 8080
";

/// The text with every run of spaces made one, line by line.
fn squash(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of a table whose first column is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_works_as_against_a_real_cluster() {
    let server = TestServer::start().await;
    let k = Kubectl {
        kubeconfig: server.kubeconfig(),
        cache: server.dir.join("kubectl-cache"),
    };
    // kubectl blocks the thread: run it off the runtime's workers.
    tokio::task::spawn_blocking(move || {
        let k = k;
        assert!(
            k.ok(&["create", "ns", "demo"])
                .contains("namespace/demo created")
        );
        assert!(
            k.ok(&[
                "create",
                "deployment",
                "web",
                "--image=x",
                "--replicas=2",
                "-n",
                "demo"
            ])
            .contains("deployment.apps/web created")
        );
        let out = k.ok_with(&["apply", "-f", "-"], MANIFEST);
        assert!(
            out.contains("deployment.apps/api created") && out.contains("service/api created"),
            "{out}"
        );
        let out = k.ok_with(&["apply", "-f", "-"], MANIFEST);
        assert!(out.contains("deployment.apps/api unchanged"), "{out}");
        let out = k.ok_with(
            &["apply", "-f", "-"],
            &MANIFEST.replace("replicas: 2", "replicas: 4"),
        );
        assert!(out.contains("deployment.apps/api configured"), "{out}");
        let out = k.ok_with(&["apply", "--server-side", "-f", "-"], MANIFEST);
        assert!(
            out.contains("deployment.apps/api serverside-applied"),
            "{out}"
        );
        assert_eq!(
            k.ok(&[
                "get",
                "deploy",
                "api",
                "-n",
                "demo",
                "-o",
                "jsonpath={.spec.replicas}"
            ]),
            "2"
        );

        let wide = k.ok(&[
            "get",
            "pods,svc,deploy,endpointslices",
            "-o",
            "wide",
            "-n",
            "demo",
        ]);
        let svc = row(&wide, "service/api");
        assert_eq!((svc[1], svc[4]), ("ClusterIP", "80/TCP"), "{wide}");
        let deploy = row(&wide, "deployment.apps/web");
        assert_eq!(
            (deploy[1], deploy[5], deploy[6]),
            ("0/2", "x", "x"),
            "{wide}"
        );

        let described = squash(&k.ok(&["describe", "svc", "api", "-n", "demo"]));
        for line in [
            "Selector: app=api",
            "Type: ClusterIP",
            "Port: http 80/TCP",
            "TargetPort: 8080/TCP",
            "Session Affinity: None",
        ] {
            assert!(
                described.lines().any(|l| l == line),
                "no {line:?} in\n{described}"
            );
        }

        assert!(
            k.ok(&["scale", "deploy", "web", "--replicas=3", "-n", "demo"])
                .contains("scaled")
        );
        assert_eq!(
            k.ok(&[
                "get",
                "deploy",
                "web",
                "-n",
                "demo",
                "-o",
                "jsonpath={.spec.replicas}"
            ]),
            "3"
        );
        assert!(
            k.ok(&["expose", "deploy", "web", "--port", "80", "-n", "demo"])
                .contains("service/web exposed")
        );
        assert_eq!(
            k.ok(&[
                "get",
                "svc",
                "web",
                "-n",
                "demo",
                "-o",
                "jsonpath={.spec.selector.app}"
            ]),
            "web"
        );
        assert!(
            k.ok(&["label", "deploy", "web", "tier=front", "-n", "demo"])
                .contains("labeled")
        );
        assert!(
            k.ok(&[
                "patch",
                "deploy",
                "web",
                "--type=merge",
                "-p",
                r#"{"spec":{"minReadySeconds":7}}"#,
                "-n",
                "demo"
            ])
            .contains("patched")
        );
        assert_eq!(
            k.ok(&[
                "get",
                "deploy",
                "-l",
                "tier=front",
                "-n",
                "demo",
                "-o",
                "jsonpath={.items[*].spec.minReadySeconds}"
            ]),
            "7"
        );

        // get -w prints the object, then each change: once its row is out, the watch runs from
        // the version it listed, so the scale that follows must show; wait returns when the
        // condition holds.
        let mut watch = k
            .command(&["get", "deploy", "web", "-n", "demo", "-w"])
            .spawn()
            .unwrap();
        let watched = Lines::of(watch.stdout.take().unwrap());
        watched.wait_for(|l| l.starts_with("web"));
        k.ok(&["scale", "deploy", "web", "--replicas=5", "-n", "demo"]);
        let waited = k.ok(&[
            "wait",
            "--for=jsonpath={.spec.replicas}=5",
            "deploy/web",
            "-n",
            "demo",
            "--timeout=10s",
        ]);
        assert!(waited.contains("condition met"), "{waited}");
        watched.wait_for(|l| l.starts_with("web") && l.contains("0/5"));
        let _ = watch.kill();
        let _ = watch.wait();

        assert!(
            k.ok(&["delete", "svc", "web", "-n", "demo"])
                .contains("service \"web\" deleted")
        );
        let out = k.run_with(&["get", "svc", "web", "-n", "demo"], "");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("NotFound"),
            "{out:?}"
        );
        assert!(
            k.ok(&["delete", "ns", "demo"])
                .contains("namespace \"demo\" deleted")
        );
        let out = k.run_with(&["get", "deploy", "-n", "demo"], "");
        assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "{out:?}");
    })
    .await
    .unwrap();
}
