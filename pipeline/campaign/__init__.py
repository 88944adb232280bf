"""Load and fault campaigns: run the whole pipeline under load while faults are injected, count
end to end whether the invariants (docs/invariants.md) and SLOs held, and write a signed
conformance report (docs/campaigns.md).

Modules, in the order a run uses them: ``profile`` (a versioned TOML profile -> a
deterministic :class:`~pipeline.campaign.profile.Plan`), ``stack`` (Kafka, RGW, workers,
Prometheus, the faulty upstream, Toxiproxy), ``load`` (open-model load with ground truth),
``incidents`` (start/stop each fault), ``collect`` (per-second samples and end-of-run
evidence), ``raw`` (the run folder's raw files), ``verdicts`` (the checker), ``report``
(Markdown, HTML, JSON) and ``signing`` (digest and OpenSSH signature).
"""
