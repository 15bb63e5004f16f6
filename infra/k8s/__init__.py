"""Kubernetes deployment of Torghut: kustomize base and overlays, and the tools around them.

* :mod:`infra.k8s.probe` — the exec probes the dataflow pods run (readiness from a gauge of the
  process's own ``/metrics``, liveness from the Bytewax worker loop advancing);
* :mod:`infra.k8s.topics` — renders ``base/kafka-topics.yaml`` (Strimzi ``KafkaTopic``) from
  ``infra/kafka/topics.toml``;
* :mod:`infra.k8s.check` — renders every overlay with kustomize and checks it offline against
  the Kubernetes schemas and our policies (CI runs it through ``tests/infra/test_k8s_*``).

``infra/k8s/README.md`` says how to build the image, render and apply an overlay.
"""
