"""The official Python client against skiff's apiserver: list, create and watch Services.

Usage: list_watch_services.py KUBECONFIG NAMESPACE
Prints one JSON line with what the client saw; exits non-zero on any client error.
"""

import json
import sys
import threading
import time

from kubernetes import client, config, watch


def main() -> int:
    kubeconfig, namespace = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()

    before = core.list_namespaced_service(namespace)
    seen = []

    def follow() -> None:
        # The stream must end by itself when timeout_seconds runs out (a hang fails the test).
        for event in watch.Watch().stream(
            core.list_namespaced_service,
            namespace,
            resource_version=before.metadata.resource_version,
            timeout_seconds=3,
        ):
            seen.append([event["type"], event["object"].metadata.name])

    watcher = threading.Thread(target=follow)
    started = time.monotonic()
    watcher.start()
    time.sleep(0.5)
    body = client.V1Service(
        metadata=client.V1ObjectMeta(name="py-svc", labels={"from": "python"}),
        spec=client.V1ServiceSpec(selector={"app": "py"}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
    )
    created = core.create_namespaced_service(namespace, body)
    watcher.join(timeout=20)
    after = core.list_namespaced_service(namespace, label_selector="from=python")
    print(json.dumps({
        "listed_before": [s.metadata.name for s in before.items],
        "created_type": created.spec.type,
        "created_target_port": created.spec.ports[0].target_port,
        "watched": seen,
        "watch_ended": not watcher.is_alive(),
        "watch_seconds": round(time.monotonic() - started, 1),
        "listed_after": [s.metadata.name for s in after.items],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
