"""KubeVirt v1.7.0's real virt-controller on the local cloud (issue 19), instead of the simulator's VM/VMI logic.

`install()` puts what virt-operator would have installed before virt-controller runs, `start_controller()`
starts it with every port on 127.0.0.1 (tests/cloud/bench.py restarts it when it exits, as kubelet would):

* every CRD of v1.7.0 (`third_party/kubevirt/v1.7.0/crds.yaml`, KubeVirt's own generators), applied by
  tests/cloud/bench.py with CDI's before virt-controller starts: it decides once, at start, whether CDI is
  there (a DataVolume CRD) and then waits for its informers of CDI's kinds (CDI, CDIConfig, DataSource,
  StorageProfile) too;
* the namespace `kubevirt` (virt-controller's namespace when it finds no service-account namespace file), the
  KubeVirt CR `kubevirt/kubevirt` with `status.phase: Deployed` (pkg/virt-config/configuration.go reads a
  KubeVirt CR's configuration only once it has a phase, as virt-operator sets it);
* virt-controller's ServiceAccount, ClusterRole, Role and bindings (`third_party/kubevirt/v1.7.0/
  rbac-controller.yaml`, rbac/controller.go), and a kubeconfig with a token of that account: it runs with
  exactly the rights virt-operator gives it;
* a serving certificate for its HTTPS endpoint (`--prom-cert-file`, `--prom-key-file`: /healthz, /leader,
  /metrics);
* the export CA (ECDSA: the export controller asserts an *ecdsa.PrivateKey) at the fixed path
  /etc/virt-controller/exportca/tls.{crt,key} (pkg/storage/export/export/export.go `caDefaultPath`, no flag),
  and its certificate in ConfigMap kubevirt/kubevirt-export-ca (`ca-bundle`). Without the file virt-controller
  dies of a nil pointer (export.go:688, createCertSecretManifest) as soon as an export needs its exporter pod.
  The file is put there in a private mount namespace only virt-controller sees (`unshare --mount`, an overlay
  over /etc whose upper layer is in the cloud's workdir): nothing is written to the machine's /etc. Where
  that is not permitted (no CAP_SYS_ADMIN, no user namespaces), virt-controller runs without it
  (`KubeVirt.export_ca` False) and exports must not be tested.

virt-controller takes `--kubeconfig` (not $KUBECONFIG); it takes the Lease `kubevirt/virt-controller` and
is ready when `GET /leader` says `{"apiserver": {"leader": "true"}}` (after its informers synced).

The node side is the simulator's: kubelet (tests/cloud/kubelet.py) and virt-handler
(tests/cloud/virthandler.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cloud.pki import leaf, name, new_ca, pem_cert, pem_key

if TYPE_CHECKING:
    from tests.cloud.bench import LocalCloud, Proc

REPO = Path(__file__).resolve().parents[2]
VERSION = "v1.7.0"
MANIFESTS = REPO / "third_party" / "kubevirt" / VERSION
NAMESPACE = "kubevirt"
LOOPBACK = "127.0.0.1"
# Host-less image names: nothing pulls them (the node side only reads them), they only have to be valid.
LAUNCHER_IMAGE = f"virt-launcher:{VERSION}"
EXPORTER_IMAGE = f"virt-exportserver:{VERSION}"
HANDLER_IMAGE = f"virt-handler:{VERSION}"
CONTROLLER_SA = "kubevirt-controller"  # components.ControllerServiceAccountName
KUBEVIRT_CR: dict[str, Any] = {
    "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
    "metadata": {"name": "kubevirt", "namespace": NAMESPACE},
    # Kova attaches volumes by changing the VM's template (declarative hotplug, alpha in v1.7.0).
    "spec": {"imagePullPolicy": "IfNotPresent",
             "configuration": {"developerConfiguration": {"featureGates": ["DeclarativeHotplugVolumes"]}}},
}


@dataclass
class KubeVirt:
    """The real virt-controller (and kube-scheduler) of one LocalCloud."""

    cloud: LocalCloud
    controller: Proc | None = None
    scheduler: Proc | None = None
    controller_port: int = 0
    export_ca: bool = False  # whether virt-controller sees /etc/virt-controller/exportca (see the docstring)
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.cloud.workdir / "kubevirt"

    # ----- what virt-operator would have installed -----
    def install(self) -> None:
        """What virt-operator installs besides the CRDs (tests/cloud/bench.py applies v1.7.0's with the others)."""
        cloud = self.cloud
        self.dir.mkdir(parents=True, exist_ok=True)
        cloud.kubectl("create", "namespace", NAMESPACE, check=False)
        cloud.kubectl("apply", "--server-side", "-f", str(MANIFESTS / "rbac-controller.yaml"))
        cloud.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(KUBEVIRT_CR))
        # virt-operator's status: the phase is what makes virt-controller take the CR's configuration.
        status = {"status": {"phase": "Deployed", "observedKubeVirtVersion": VERSION,
                             "targetKubeVirtVersion": VERSION}}
        cloud.kubectl("-n", NAMESPACE, "patch", "kubevirts.kubevirt.io", "kubevirt", "--subresource=status",
                      "--type=merge", "-p", json.dumps(status))

    def controller_kubeconfig(self) -> Path:
        """A kubeconfig with a token of virt-controller's own ServiceAccount."""
        from tests.cloud.bench import kubeconfig_dict

        token = self.cloud.kubectl("-n", NAMESPACE, "create", "token", CONTROLLER_SA, "--duration=48h").strip()
        path = self.dir / "virt-controller.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig_dict(
            self.cloud.api_url, (self.cloud.workdir / "pki" / "ca.crt").read_text(), token=token,
            user=CONTROLLER_SA)))
        return path

    def _serving_cert(self) -> tuple[Path, Path, Path]:
        ca = new_ca("virt-controller-ca")
        cert, key = leaf("virt-controller", ca, server=True)
        files = (self.dir / "controller-ca.crt", self.dir / "controller.crt", self.dir / "controller.key")
        for path, data in zip(files, (pem_cert(ca[0]), pem_cert(cert), pem_key(key)), strict=True):
            path.write_bytes(data)
        return files

    def _export_ca(self) -> Path:
        """The export CA as virt-operator makes it (ECDSA P-256, self-signed), under an /etc overlay's upper
        layer; its certificate in ConfigMap kubevirt-export-ca. Returns the overlay's root."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = name("kubevirt-export-ca")
        stamp = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(stamp - dt.timedelta(minutes=5))
                .not_valid_after(stamp + dt.timedelta(days=7))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                             content_commitment=False, data_encipherment=False, key_agreement=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False),
                               critical=True)
                .sign(key, hashes.SHA256()))
        root = self.dir / "etc-overlay"
        ca_dir = root / "upper" / "virt-controller" / "exportca"
        ca_dir.mkdir(parents=True, exist_ok=True)
        (root / "work").mkdir(exist_ok=True)
        (ca_dir / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (ca_dir / "tls.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                                           serialization.NoEncryption()))
        self.cloud.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kubevirt-export-ca", "namespace": NAMESPACE},
            "data": {"ca-bundle": cert.public_bytes(serialization.Encoding.PEM).decode()}}))
        return root

    @staticmethod
    def _in_etc_overlay(root: Path, args: list[str]) -> list[str]:
        """`args` run in a private mount namespace with `root`/upper laid over /etc (as root; else in a user
        namespace, where the kernel allows unprivileged overlays)."""
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        script = (f'mount -t overlay overlay -o "lowerdir=/etc,upperdir={root}/upper,workdir={root}/work" /etc '
                  '&& exec "$@"')
        return ["unshare", "--mount", *user, "sh", "-c", script, "sh", *args]

    # ----- processes -----
    def start_controller(self, timeout: float = 120) -> Proc:
        from tests.cloud.bench import binary, free_port

        ca, cert, key = self._serving_cert()
        self.controller_port = free_port()
        command = [binary("virt-controller")]
        overlay = self._export_ca()
        probe = subprocess.run(
            self._in_etc_overlay(overlay, ["test", "-s", "/etc/virt-controller/exportca/tls.key"]),
            capture_output=True, timeout=30)
        self.export_ca = probe.returncode == 0
        if self.export_ca:
            command = self._in_etc_overlay(overlay, command)
        proc = self.cloud.spawn("virt-controller", [
            *command, f"--kubeconfig={self.controller_kubeconfig()}",
            f"--listen={LOOPBACK}", f"--port={self.controller_port}",
            f"--prom-cert-file={cert}", f"--prom-key-file={key}",
            f"--launcher-image={LAUNCHER_IMAGE}", f"--exporter-image={EXPORTER_IMAGE}",
            # Shorter than the 15 s / 10 s / 2 s defaults: a restarted controller takes over sooner.
            "--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline=3s",
            "--leader-elect-retry-period=1s", "--v=3"],
            # No in-cluster configuration: it would be tried before --kubeconfig.
            env={"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": ""})
        proc.ports = {"https": self.controller_port}
        ctx = ssl.create_default_context(cafile=str(ca))
        url = f"https://{LOOPBACK}:{self.controller_port}/leader"

        def leading() -> bool:
            with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
                return bool(json.loads(resp.read())["apiserver"]["leader"] == "true")
        self.cloud._wait(proc, leading, "virt-controller to lead (GET /leader)", timeout=timeout)
        self.controller = proc
        return proc


def leader(cloud: LocalCloud) -> str:
    """The holder of virt-controller's Lease."""
    out = cloud.kubectl("-n", NAMESPACE, "get", "lease", "virt-controller", "-o", "jsonpath={.spec.holderIdentity}")
    return out.strip()
