"""Pinned versions of the lab components (the one place to change them).

Changing a version here makes ``python lab/build.py`` regenerate the
matching wrapper module in ``lab/go/<component>/`` (go.mod + go.sum) and
build a new binary into its own versioned cache directory.
"""

KUBERNETES_VERSION = "v1.35.4"  # module k8s.io/kubernetes (kube-apiserver, controller-manager)
ETCD_VERSION = "v3.6.16"  # module go.etcd.io/etcd/server/v3
COREDNS_VERSION = "v1.14.7"  # module github.com/coredns/coredns

VERSIONS = {
    "etcd": ETCD_VERSION,
    "kube-apiserver": KUBERNETES_VERSION,
    "kube-controller-manager": KUBERNETES_VERSION,
    "coredns": COREDNS_VERSION,
}
