"""A tiny stand-in for kube-apiserver, and the recorded API JSON it serves.

The server speaks plain HTTP on 127.0.0.1 (a port the test itself opened) and answers
from per-path reply queues, so a test can script "500, then 200" or a 403 Status body.
The EndpointSlice list route pages its items with ``continue`` tokens like the real
apiserver, so the client's paging loop is exercised with small recordings.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from kdisco import Query, Resolution, ServicePort
from kdisco._k8s.client import KubeClient
from kdisco._k8s.objects import ServiceInfo, SliceInfo, resolve_info
from kdisco._k8s.objects import merge_slices as merge_slice_infos
from kdisco._strategies.base import Miss

DATA = Path(__file__).parent / "data" / "api"

Json = dict[str, Any]


def load(name: str) -> Json:
    """One recorded response body from tests/data/api."""
    doc = json.loads((DATA / name).read_text())
    assert isinstance(doc, dict)
    return doc


def slice_items(name: str) -> list[Json]:
    items = load(name)["items"]
    assert isinstance(items, list)
    return items


@attrs.frozen
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@attrs.frozen
class Reply:
    status: int
    body: Json | bytes
    headers: dict[str, str] = attrs.Factory(dict)


@attrs.define
class Stream:
    """A watch response: chunked, one JSON line per item put on ``events``.

    ``None`` ends the response; nothing put means a watch that hangs (until the
    server stops or the client goes away).
    """

    events: queue.Queue[Json | bytes | None] = attrs.Factory(queue.Queue)


Handler = Callable[[Request], "Reply | Stream"]


class FakeApiServer:
    """Answers GETs from scripted replies; remembers every request it saw."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        self._routes: dict[str, list[Handler]] = {}
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                request = Request(
                    method="GET",
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                reply = server._dispatch(request)
                if isinstance(reply, Stream):
                    self._stream(reply)
                    return
                body = (
                    reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                )
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, stream: Stream) -> None:
                self.protocol_version = "HTTP/1.1"  # chunked encoding needs 1.1
                self.close_connection = True
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.flush()
                    while True:
                        try:
                            item = stream.events.get(timeout=0.02)
                        except queue.Empty:
                            if server.stopping.is_set():
                                return
                            continue
                        if item is None:
                            break
                        raw = item if isinstance(item, bytes) else json.dumps(item).encode()
                        data = raw + b"\n"
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    return  # the client went away (shut its socket down)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        # A short poll keeps shutdown() (once per test) from waiting the default 0.5 s.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def route(self, path: str, *handlers: Handler | Reply) -> None:
        """Answer ``path`` with these, in order; the last one repeats."""
        self._routes[path] = [h if callable(h) else _const(h) for h in handlers]

    def _dispatch(self, request: Request) -> Reply | Stream:
        with self._lock:
            self.requests.append(request)
            queue = self._routes.get(request.path)
            if not queue:
                return Reply(404, _status(404, "NotFound", f"no route {request.path}"))
            handler = queue.pop(0) if len(queue) > 1 else queue[0]
        return handler(request)

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    # -- the two routes the api strategy reads ---------------------------------

    def serve_service(self, doc: Json, *, ready_pod: bool = False) -> None:
        """``ready_pod``: also serve the slices of one ready pod behind it."""
        meta = doc["metadata"]
        self.route(service_path(meta["namespace"], meta["name"]), Reply(200, doc))
        if ready_pod:
            self.serve_slices(meta["namespace"], meta["name"], ready_pod_slices(doc))

    def serve_slices(
        self, namespace: str, service: str, slice_list: Json, *, page_size: int = 1000
    ) -> None:
        """The slice list, filtered by the service-name label, paged like the apiserver."""
        items = [
            item
            for item in slice_list["items"]
            if item["metadata"]["labels"].get("kubernetes.io/service-name") == service
        ]

        def handler(request: Request) -> Reply:
            selector = request.query.get("labelSelector", [""])[0]
            if selector != f"kubernetes.io/service-name={service}":
                # Without the selector the client would read every slice in the
                # namespace: fail loudly rather than answer.
                return Reply(400, _status(400, "BadRequest", f"unexpected selector {selector!r}"))
            start = int(request.query.get("continue", ["0"])[0])
            limit = min(page_size, int(request.query.get("limit", [str(page_size)])[0]))
            page = items[start : start + limit]
            meta: Json = {"resourceVersion": slice_list["metadata"]["resourceVersion"]}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            return Reply(
                200,
                {
                    "kind": "EndpointSliceList",
                    "apiVersion": "discovery.k8s.io/v1",
                    "metadata": meta,
                    "items": page,
                },
            )

        self.route(slices_path(namespace), handler)


def _const(reply: Reply) -> Handler:
    return lambda _request: reply


def _status(code: int, reason: str, message: str) -> Json:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def service_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{name}"


def slices_path(namespace: str) -> str:
    return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


@contextmanager
def fake_apiserver() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client_for(url: str) -> KubeClient:
    """kdisco's own API client aimed at ``url`` (plain HTTP, no credentials)."""
    return KubeClient.for_url(url)


def write_kubeconfig(
    path: Path,
    server: str = "http://127.0.0.1:1",
    *,
    token: str = "kubeconfig-token",
    namespace: str = "from-kubeconfig",
) -> Path:
    """A kubeconfig with a token user and two contexts: ``lab`` (current, in
    ``namespace``) and ``other`` (in ``other-context``)."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: {server}
contexts:
- name: lab
  context:
    cluster: lab
    user: dev
    namespace: {namespace}
- name: other
  context:
    cluster: lab
    user: dev
    namespace: other-context
current-context: lab
users:
- name: dev
  user:
    token: {token}
"""
    )
    return path


def resolve_service(
    query: Query, svc: Json, list_slices: Callable[[], list[Json]]
) -> Resolution | Miss:
    """The api strategy's answer for a Service and its slices given as API JSON."""
    info = ServiceInfo.from_json(svc)
    prefer = info.slice_port_name(query.port)
    return resolve_info(
        query, info, lambda: [SliceInfo.from_json(s, prefer) for s in list_slices()]
    )


def ready_pod_slices(svc: Json, address: str = "192.0.2.99") -> Json:
    """The slice list the controller would write for one ready pod behind ``svc``, serving
    each of its ports (a ClusterIP's slices say whether anything behind it is ready)."""
    meta = svc["metadata"]
    ports = [
        {
            "name": p.get("name", ""),
            "port": p["targetPort"] if isinstance(p.get("targetPort"), int) else p["port"],
            "protocol": p.get("protocol", "TCP"),
        }
        for p in svc.get("spec", {}).get("ports", [])
    ]
    return {
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": "1"},
        "items": [
            {
                "metadata": {
                    "name": f"{meta['name']}-ready",
                    "namespace": meta["namespace"],
                    "labels": {"kubernetes.io/service-name": meta["name"]},
                },
                "addressType": "IPv6" if ":" in address else "IPv4",
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": ports,
            }
        ],
    }


def ready_pod(svc: Json) -> Callable[[], list[Json]]:
    """``resolve_service``'s ``list_slices`` for one ready pod behind ``svc``."""
    items = ready_pod_slices(svc)["items"]
    return lambda: list(items)


def merge_slices(slices: list[Json], chosen: ServicePort | None) -> tuple[Any, ...]:
    """``merge_slices`` over EndpointSlices given as API JSON."""
    prefer = (chosen.name or "") if chosen else None
    return merge_slice_infos([SliceInfo.from_json(s, prefer) for s in slices], chosen)


# -- a namespace served as list + watch, for the watch cache ------------------------------

RESOURCES = ("services", "endpointslices")


def services_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services"


def svc(name: str, *, namespace: str = "billing", headless: bool = True, port: int = 80) -> Json:
    spec: Json = {"type": "ClusterIP", "ports": [{"name": "http", "port": port}]}
    spec["clusterIP"] = "None" if headless else "10.96.0.10"
    if not headless:
        spec["clusterIPs"] = ["10.96.0.10"]
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def eps_slice(
    name: str, service: str, hosts: list[str], *, namespace: str = "billing", port: int = 8080
) -> Json:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [h], "conditions": {"ready": True}, "nodeName": "node-1", "zone": "z"}
            for h in hosts
        ],
        "ports": [{"name": "http", "port": port}],
    }


def put_backed(ns: FakeNamespace, service: Json) -> None:
    """A ClusterIP Service and one ready pod behind it (its slice, as the controller would
    write it): without one the api strategy says nothing behind the ClusterIP is ready."""
    meta = service["metadata"]
    ns.put("services", service)
    ns.put(
        "endpointslices",
        eps_slice(f"{meta['name']}-1", meta["name"], ["192.0.2.99"], namespace=meta["namespace"]),
    )


class FakeNamespace:
    """One namespace's Services and EndpointSlices, served like kube-apiserver does.

    Lists page with ``continue`` tokens and carry the current resourceVersion; a watch
    replays every logged event after its resourceVersion, then streams new ones. After
    ``compact()`` a watch from an older resourceVersion gets 410 Gone, as an HTTP 410 or
    as an ERROR event. ``script_watch`` makes the next watch requests answer otherwise
    (a Reply, or ``"hang"``: headers, then silence).
    """

    def __init__(self, server: FakeApiServer, namespace: str = "billing") -> None:
        self.server = server
        self.namespace = namespace
        self.rv = 100
        self.compacted = 0
        self.gone_as_event = True
        self.objects: dict[str, dict[str, Json]] = {r: {} for r in RESOURCES}
        self.log: list[tuple[int, str, Json]] = []
        self.open: dict[str, list[Stream]] = {r: [] for r in RESOURCES}
        self.scripted: dict[str, list[Reply | str]] = {r: [] for r in RESOURCES}
        self.list_replies: dict[str, list[Reply]] = {r: [] for r in RESOURCES}
        self._lock = threading.RLock()
        server.route(services_path(namespace), lambda r: self._handle("services", r))
        server.route(slices_path(namespace), lambda r: self._handle("endpointslices", r))

    # -- changing the state ----------------------------------------------------------

    def put(self, resource: str, obj: Json, *, announce: bool = True) -> None:
        with self._lock:
            self.rv += 1
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self.rv)
            name = obj["metadata"]["name"]
            kind = "MODIFIED" if name in self.objects[resource] else "ADDED"
            self.objects[resource][name] = obj
            if resource == "services":
                self.server.route(service_path(self.namespace, name), lambda r: self._get(name))
            if announce:
                self._emit(resource, {"type": kind, "object": obj})

    def delete(self, resource: str, name: str) -> None:
        with self._lock:
            self.rv += 1
            obj = self.objects[resource].pop(name)
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._emit(resource, {"type": "DELETED", "object": obj})

    def bookmark(self, resource: str) -> int:
        """A BOOKMARK at a new resourceVersion (other objects changed meanwhile)."""
        with self._lock:
            self.rv += 5
            event = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.rv)}}}
            for stream in self.open[resource]:
                stream.events.put(event)
            return self.rv

    def end_watches(self, resource: str) -> None:
        """The server ends every open watch of ``resource`` (like timeoutSeconds does)."""
        with self._lock:
            for stream in self.open[resource]:
                stream.events.put(None)
            self.open[resource] = []

    def compact(self) -> None:
        with self._lock:
            self.compacted = self.rv

    def send(self, resource: str, item: Json | bytes) -> None:
        """A raw line to every open watch of ``resource``."""
        with self._lock:
            for stream in self.open[resource]:
                stream.events.put(item)

    def script_watch(self, resource: str, *replies: Reply | str) -> None:
        with self._lock:
            self.scripted[resource].extend(replies)

    def _emit(self, resource: str, event: Json) -> None:
        self.log.append((self.rv, resource, event))
        for stream in self.open[resource]:
            stream.events.put(event)

    # -- what the client asked ---------------------------------------------------------

    def requests(self, resource: str, *, watch: bool) -> list[Request]:
        path = (
            services_path(self.namespace) if resource == "services" else slices_path(self.namespace)
        )
        return [
            r
            for r in list(self.server.requests)
            if r.path == path
            and ("watch" in r.query) == watch
            and "=" not in r.query.get("labelSelector", [""])[0]
        ]

    def lists(self, resource: str) -> int:
        return len(self.requests(resource, watch=False))

    def watches(self, resource: str) -> int:
        return len(self.requests(resource, watch=True))

    def direct_reads(self) -> list[str]:
        """GETs of one Service, or LISTs of one Service's slices (the uncached path)."""
        return [
            r.path
            for r in list(self.server.requests)
            if r.path.startswith(services_path(self.namespace) + "/")
            or "=" in r.query.get("labelSelector", [""])[0]
        ]

    # -- serving -------------------------------------------------------------------------

    def _get(self, name: str) -> Reply:
        with self._lock:
            obj = self.objects["services"].get(name)
        if obj is None:
            return Reply(404, _status(404, "NotFound", f'services "{name}" not found'))
        return Reply(200, obj)

    def _handle(self, resource: str, request: Request) -> Reply | Stream:
        selector = request.query.get("labelSelector", [""])[0]
        with self._lock:
            if "watch" in request.query:
                return self._watch(resource, request)
            if self.list_replies[resource]:
                return self.list_replies[resource].pop(0)
            items = sorted(self.objects[resource].values(), key=lambda o: o["metadata"]["name"])
            if "=" in selector:  # the direct path: one Service's slices
                wanted = selector.split("=", 1)[1]
                items = [i for i in items if i["metadata"]["labels"].get(SERVICE_LABEL) == wanted]
            elif selector:
                items = [i for i in items if selector in i["metadata"].get("labels", {})]
            start = int(request.query.get("continue", ["0"])[0])
            limit = int(request.query.get("limit", ["1000"])[0])
            meta: Json = {"resourceVersion": str(self.rv)}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
            return Reply(200, {"metadata": meta, "items": items[start : start + limit]})

    def _watch(self, resource: str, request: Request) -> Reply | Stream:
        if self.scripted[resource]:
            scripted = self.scripted[resource].pop(0)
            if isinstance(scripted, Reply):
                return scripted
            return Stream()  # "hang": open, and never a byte
        since = int(request.query.get("resourceVersion", ["0"])[0] or 0)
        stream = Stream()
        if since < self.compacted:
            if not self.gone_as_event:
                return Reply(410, _status(410, "Expired", "too old resource version"))
            gone = _status(410, "Expired", f"too old resource version: {since}")
            stream.events.put({"type": "ERROR", "object": gone})
            stream.events.put(None)
            return stream
        for rv, res, event in self.log:
            if res == resource and rv > since:
                stream.events.put(event)
        self.open[resource].append(stream)
        return stream


SERVICE_LABEL = "kubernetes.io/service-name"


# -- TLS: a CA, server and client certificates, and an https FakeApiServer ----------------


@attrs.frozen
class Certs:
    """PEM files of a throwaway CA, a server certificate it signed (for ``server_names``)
    and a client certificate (CN ``dev``) it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(
    directory: Path, server_names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> Certs:
    """Certificates made with ``cryptography``; each name that parses as an IP address
    becomes an IP SAN, the others DNS SANs."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("kdisco-test-ca"))
        .issuer_name(name("kdisco-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    sans: list[x509.GeneralName] = []
    for entry in server_names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            sans.append(x509.DNSName(entry))
    server_cert, server_key = leaf("kube-apiserver", sans, ExtendedKeyUsageOID.SERVER_AUTH)
    client_cert, client_key = leaf("dev", [], ExtendedKeyUsageOID.CLIENT_AUTH)
    directory.mkdir(parents=True, exist_ok=True)
    return Certs(
        ca=write_cert(ca_cert, directory / "ca.crt"),
        server_cert=write_cert(server_cert, directory / "server.crt"),
        server_key=write_key(server_key, directory / "server.key"),
        client_cert=write_cert(client_cert, directory / "client.crt"),
        client_key=write_key(client_key, directory / "client.key"),
    )


@contextmanager
def tls_apiserver(certs: Certs, *, client_certs: bool = False) -> Iterator[FakeApiServer]:
    """A FakeApiServer behind TLS with ``certs``' server certificate; with
    ``client_certs`` it refuses clients without a certificate from the CA. Its
    ``url`` still says http: use ``https_url``."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    if client_certs:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certs.ca)
    server = FakeApiServer()
    httpd = server._httpd
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def https_url(server: FakeApiServer, host: str = "127.0.0.1") -> str:
    return server.url.replace("http://127.0.0.1", f"https://{host}", 1)


def write_tls_kubeconfig(
    path: Path,
    server: str,
    certs: Certs,
    *,
    token: str = "kubeconfig-token",
    tls_server_name: str | None = None,
    proxy_url: str | None = None,
) -> Path:
    """A kubeconfig that trusts ``certs.ca`` and logs in with the client certificate
    and a token (all given as base64 data, as ``kind`` and cloud kubeconfigs do)."""
    import base64

    def data(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    extra = ""
    if tls_server_name:
        extra += f"    tls-server-name: {tls_server_name}\n"
    if proxy_url:
        extra += f"    proxy-url: {proxy_url}\n"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: {server}
    certificate-authority-data: {data(certs.ca)}
{extra}contexts:
- name: lab
  context:
    cluster: lab
    user: dev
    namespace: billing
current-context: lab
users:
- name: dev
  user:
    token: {token}
    client-certificate-data: {data(certs.client_cert)}
    client-key-data: {data(certs.client_key)}
"""
    )
    return path


# -- a server that never finishes a response -----------------------------------------------


class TrickleServer:
    """Answers every GET with a 200 whose body never ends: ``{`` and then one space
    every ``every`` seconds (or nothing at all, with ``every=None``). Counts the
    connections it accepted and those the client closed (seen when a write fails or
    a read finds the end)."""

    def __init__(self, every: float | None = 0.05) -> None:
        import socket

        self.every = every
        self.accepted = 0
        self.closed_by_client = 0
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> TrickleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join()
        for thread in self._threads:
            thread.join()
        self._sock.close()

    def all_closed(self) -> bool:
        with self._lock:
            return self.accepted > 0 and self.closed_by_client == self.accepted

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with self._lock:
                self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: Any) -> None:
        import select

        with conn:
            conn.settimeout(1.0)
            request = b""
            try:
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    request += chunk
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000000\r\n\r\n{"
                )
                while not self._stopping.is_set():
                    # The client going away shows as readable with nothing to read.
                    readable, _, _ = select.select([conn], [], [], self.every or 0.02)
                    if readable and not conn.recv(1):
                        raise ConnectionResetError
                    if self.every is not None:
                        conn.sendall(b" ")
                        with self._lock:
                            self.bytes_sent += 1
            except OSError:
                with self._lock:
                    self.closed_by_client += 1


# -- big Services, for loop-stall measurements ----------------------------------------------


def big_slices(
    service: str, *, slices: int = 100, per_slice: int = 100, namespace: str = "billing"
) -> list[Json]:
    """``slices`` EndpointSlices of ``per_slice`` ready endpoints each, shaped like the
    EndpointSlice controller's (targetRef, node, zone, all three conditions)."""
    out = []
    for i in range(slices):
        hosts = [f"10.{i // 256}.{i % 256}.{j}" for j in range(per_slice)]
        sl = eps_slice(f"{service}-{i:04d}", service, hosts, namespace=namespace)
        for ep in sl["endpoints"]:
            ep["targetRef"] = {"kind": "Pod", "name": f"{service}-{ep['addresses'][0]}"}
            ep["conditions"] = {"ready": True, "serving": True, "terminating": False}
        out.append(sl)
    return out


def slow_lists(ns: FakeNamespace, resource: str, seconds: float) -> threading.Event:
    """Every list (not watch) of ``resource`` in ``ns`` answers ``seconds`` late, or
    as soon as the returned event is set."""
    path = services_path(ns.namespace) if resource == "services" else slices_path(ns.namespace)
    release = threading.Event()

    def handler(request: Request) -> Reply | Stream:
        if "watch" not in request.query:
            release.wait(seconds)
        return ns._handle(resource, request)

    ns.server.route(path, handler)
    return release
