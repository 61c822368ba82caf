//! Credentials made before the first start (`skiff-control init`, then `mint-token`), as an
//! installer does when it hands each node its kubeconfig before the control plane runs: the
//! server that starts later on that data dir keeps the CA and knows the tokens.

mod common;

use common::TestServer;
use skiff_control::auth::{kubeconfig, tokens};
use skiff_control::server;

async fn get(config: kube::Config, path: &str) -> Result<String, kube::Error> {
    let client = kube::Client::try_from(config).unwrap();
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    client.request_text(request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_kubeconfig_minted_before_the_first_start_works_once_it_serves() {
    let dir = std::env::temp_dir().join(format!("skiff-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let made = server::credentials(&common::config(&dir, port)).unwrap();
    let ca_before = std::fs::read(&made.certs.ca_cert).unwrap();
    let token = tokens::mint(&dir, "system:node:node1", &["system:nodes".to_owned()]).unwrap();
    let node_kubeconfig = dir.join("node1.kubeconfig");
    kubeconfig::write(
        &node_kubeconfig,
        &made.url,
        &made.certs.ca_cert,
        "system:node:node1",
        &token,
    )
    .unwrap();

    let server = TestServer::start_in(&dir, port).await;
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_before);
    let read = |path: &std::path::Path| {
        let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
        async move {
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .unwrap()
        }
    };
    let node = read(&node_kubeconfig).await;
    let nodes = get(node, "/api/v1/nodes").await.unwrap();
    assert!(nodes.contains("NodeList"), "{nodes}");
    // The admin kubeconfig init wrote is the one the server keeps using.
    let admin = read(&made.admin_kubeconfig).await;
    assert!(get(admin, "/api/v1/namespaces").await.is_ok());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
