use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::fake_kernel::NODE;
use crate::ipam::MemoryStore;
use crate::link::FakeNamespaces;
use crate::pod::host_veth_name;

const NETNS: &str = "/run/netns/p1";

struct Harness {
    fake: FakeNamespaces,
    store: MemoryStore,
    opened: Arc<Mutex<Vec<PathBuf>>>,
}

type TestPlugin = Plugin<FakeNamespaces, Box<dyn Fn(&Path) -> Result<MemoryStore, IpamError>>>;

impl Harness {
    fn new() -> Self {
        let fake = FakeNamespaces::new();
        fake.kernel().add_netns(NETNS);
        Harness {
            fake,
            store: MemoryStore::default(),
            opened: Arc::default(),
        }
    }

    fn plugin(&self) -> TestPlugin {
        let (store, opened) = (self.store.clone(), Arc::clone(&self.opened));
        Plugin::new(
            self.fake.clone(),
            Box::new(move |dir: &Path| {
                opened.lock().unwrap().push(dir.to_owned());
                Ok(store.clone())
            }),
        )
    }

    fn call(&self, vars: &[(&str, &str)], conf: &Value) -> Response {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.plugin()
            .execute(|k| map.get(k).cloned(), conf.to_string().as_bytes())
    }

    fn cmd(&self, command: &str, id: &str, conf: &Value) -> Response {
        self.call(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", NETNS),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            conf,
        )
    }

    fn reservations(&self) -> usize {
        self.store.snapshot().reservations.len()
    }

    fn node_links(&self) -> Vec<String> {
        self.fake.kernel().with(|k| k.link_names(NODE))
    }
}

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "skiff", "type": "skiff-cni",
           "podCIDR": "10.244.1.0/24", "mtu": 1450, "dataDir": "/tmp/skiff-test"})
}

fn code(response: &Response) -> u64 {
    assert!(
        !response.success,
        "expected a failure: {:?}",
        response.stdout
    );
    response.stdout.as_ref().unwrap()["code"].as_u64().unwrap()
}

fn ok(response: Response) -> Option<Value> {
    assert!(response.success, "expected success: {:?}", response.stdout);
    response.stdout
}

#[test]
fn add_returns_a_full_result_and_keeps_state_under_the_network_name() {
    let h = Harness::new();
    let result = ok(h.cmd("ADD", "c1", &conf("1.1.0"))).unwrap();
    assert_eq!(result["cniVersion"], "1.1.0");
    assert_eq!(
        result["interfaces"][0]["name"],
        host_veth_name(&Attachment::new("c1", "eth0"))
    );
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(result["interfaces"][1]["sandbox"], NETNS);
    assert_eq!(result["interfaces"][1]["mtu"], 1450);
    assert!(result["interfaces"][1]["mac"].as_str().unwrap().len() == 17);
    assert_eq!(
        result["ips"],
        json!([{"address": "10.244.1.2/32", "gateway": "10.244.1.1", "interface": 1}])
    );
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}])
    );
    assert_eq!(
        h.opened.lock().unwrap()[0],
        PathBuf::from("/tmp/skiff-test/skiff")
    );
    assert_eq!(h.reservations(), 1);
}

#[test]
fn a_0_4_0_config_gets_a_0_4_0_result() {
    let h = Harness::new();
    let result = ok(h.cmd("ADD", "c1", &conf("0.4.0"))).unwrap();
    assert_eq!(
        (
            result["cniVersion"].as_str(),
            result["ips"][0]["version"].as_str()
        ),
        (Some("0.4.0"), Some("4"))
    );
    assert!(result["interfaces"][1].get("mtu").is_none());
}

#[test]
fn chained_after_another_plugin_our_entries_are_appended() {
    let h = Harness::new();
    let mut config = conf("1.0.0");
    config["prevResult"] = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "dummy0"}],
        "ips": [{"address": "192.0.2.9/24", "interface": 0}],
        "dns": {"nameservers": ["192.0.2.53"]}});
    let result = ok(h.cmd("ADD", "c1", &config)).unwrap();
    assert_eq!(result["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(result["ips"][0]["address"], "192.0.2.9/24");
    assert_eq!(result["ips"][1]["interface"], 2);
    assert_eq!(result["dns"]["nameservers"][0], "192.0.2.53");
}

#[test]
fn a_failed_add_gives_back_its_address_and_its_veth() {
    let h = Harness::new();
    h.fake.kernel().fail_next("add neigh");
    let response = h.cmd("ADD", "c1", &conf("1.1.0"));
    assert_eq!(code(&response), 101);
    assert_eq!(h.reservations(), 0);
    assert!(
        !h.node_links()
            .contains(&host_veth_name(&Attachment::new("c1", "eth0")))
    );
    // And the next ADD works and gets the next address (round robin), not a stale one.
    let result = ok(h.cmd("ADD", "c1", &conf("1.1.0"))).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.244.1.3/32");
}

#[test]
fn a_missing_netns_is_104_and_reserves_nothing() {
    let h = Harness::new();
    let response = h.call(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/nope"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ],
        &conf("1.1.0"),
    );
    assert_eq!(code(&response), 104);
    assert_eq!(h.reservations(), 0);
}

#[test]
fn bad_input_gets_its_code_in_the_config_version_and_changes_nothing() {
    let h = Harness::new();
    let full = |skip: &str| {
        [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", NETNS),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
        ]
        .into_iter()
        .filter(|(k, _)| *k != skip)
        .collect::<Vec<_>>()
    };
    let with = |key: &str, value: Value| {
        let mut c = conf("1.0.0");
        c[key] = value;
        c
    };
    let cases: Vec<(Response, u64)> = vec![
        (h.call(&full("CNI_IFNAME"), &conf("1.0.0")), 4),
        (h.call(&full("CNI_NETNS"), &conf("1.0.0")), 4),
        (h.call(&full(""), &json!("not an object")), 6),
        (h.call(&full(""), &with("cniVersion", json!("0.2.0"))), 1),
        (
            h.call(&full(""), &with("ipam", json!({"type": "host-local"}))),
            2,
        ),
        (
            h.call(&full(""), &with("podCIDR", json!("10.244.1.0/33"))),
            7,
        ),
        (h.call(&full(""), &with("mtu", json!(1))), 7),
    ];
    for (response, expected) in &cases {
        assert_eq!(code(response), *expected, "{:?}", response.stdout);
    }
    // The version of the error object follows the config when it can be read.
    assert_eq!(cases[0].0.stdout.as_ref().unwrap()["cniVersion"], "1.0.0");
    assert_eq!(h.reservations(), 0);
    assert_eq!(h.node_links(), ["lo"]);
    assert!(h.fake.kernel().with(|k| k.link(NETNS, "eth0")).is_none());
}

#[test]
fn del_is_idempotent_with_or_without_netns_and_frees_the_address() {
    let h = Harness::new();
    ok(h.cmd("ADD", "c1", &conf("1.1.0")));
    ok(h.cmd("DEL", "c1", &conf("1.1.0")));
    ok(h.cmd("DEL", "c1", &conf("1.1.0")));
    assert_eq!(h.reservations(), 0);
    assert_eq!(h.node_links(), ["lo"]);
    let no_netns = [
        ("CNI_COMMAND", "DEL"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/x"),
    ];
    ok(h.call(&no_netns, &conf("1.1.0")));
    ok(h.cmd("ADD", "c2", &conf("1.1.0")));
    h.fake.kernel().remove_netns(NETNS);
    ok(h.cmd("DEL", "c2", &conf("1.1.0")));
    assert_eq!(h.reservations(), 0);
}

#[test]
fn check_passes_on_a_fresh_add_and_fails_when_the_veth_is_gone() {
    let h = Harness::new();
    let result = ok(h.cmd("ADD", "c1", &conf("1.1.0"))).unwrap();
    let mut config = conf("1.1.0");
    config["prevResult"] = result;
    ok(h.cmd("CHECK", "c1", &config));

    let mut wrong_mac = config.clone();
    wrong_mac["prevResult"]["interfaces"][1]["mac"] = json!("02:99:99:99:99:99");
    assert_eq!(code(&h.cmd("CHECK", "c1", &wrong_mac)), 106);

    let host_veth = host_veth_name(&Attachment::new("c1", "eth0"));
    h.fake
        .kernel()
        .with(|k| k.delete_link_named(NODE, &host_veth));
    let response = h.cmd("CHECK", "c1", &config);
    assert_eq!(code(&response), 106);
    assert!(
        response.stdout.unwrap()["msg"]
            .as_str()
            .unwrap()
            .contains("missing")
    );

    assert_eq!(
        code(&h.cmd("CHECK", "c1", &conf("1.1.0"))),
        7,
        "no prevResult"
    );
    assert_eq!(code(&h.cmd("CHECK", "unknown", &config)), 3);
}

#[test]
fn gc_releases_all_but_the_valid_attachments_and_their_veths() {
    let h = Harness::new();
    for (n, id) in ["keep", "drop1", "drop2"].iter().enumerate() {
        let path = format!("/run/netns/gc{n}");
        h.fake.kernel().add_netns(&path);
        ok(h.call(
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &path),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x"),
            ],
            &conf("1.1.0"),
        ));
    }
    let gc = |valid: Value| {
        let mut c = conf("1.1.0");
        c["cni.dev/valid-attachments"] = valid;
        h.call(&[("CNI_COMMAND", "GC")], &c)
    };
    ok(gc(json!([{"containerID": "keep", "ifname": "eth0"}])));
    assert_eq!(h.reservations(), 1);
    let keep = host_veth_name(&Attachment::new("keep", "eth0"));
    assert_eq!(h.node_links(), ["lo", keep.as_str()]);
    ok(gc(json!([])));
    assert_eq!(
        (h.reservations(), h.node_links()),
        (0, vec!["lo".to_owned()])
    );

    assert_eq!(
        code(&h.call(&[("CNI_COMMAND", "GC")], &conf("1.1.0"))),
        7,
        "no valid list"
    );
    let mut old = conf("1.0.0");
    old["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(code(&h.call(&[("CNI_COMMAND", "GC")], &old)), 1);
}

#[test]
fn status_is_ready_until_the_pool_is_exhausted() {
    let h = Harness::new();
    let mut tiny = conf("1.1.0");
    tiny["podCIDR"] = json!("10.9.0.0/30");
    ok(h.call(&[("CNI_COMMAND", "STATUS")], &tiny));
    ok(h.cmd("ADD", "c1", &tiny));
    let response = h.call(&[("CNI_COMMAND", "STATUS")], &tiny);
    assert_eq!(code(&response), 50);
    assert_eq!(code(&h.cmd("ADD", "c2", &tiny)), 102);
    assert_eq!(
        code(&h.call(&[("CNI_COMMAND", "STATUS")], &conf("1.0.0"))),
        1
    );
}

#[test]
fn version_lists_every_supported_version_whatever_the_input() {
    let h = Harness::new();
    for stdin in [json!({"cniVersion": "1.0.0"}), json!({})] {
        let answer = ok(h.call(&[("CNI_COMMAND", "VERSION")], &stdin)).unwrap();
        assert_eq!(
            answer,
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
        );
    }
}
