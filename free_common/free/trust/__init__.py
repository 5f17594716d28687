"""Trust checks on submitted teachers: what screening measures and how it judges a pool.

- :mod:`~free_common.free.trust.probes`: the probe images (drawn from the server's own
  meta-val data) and a teacher's logits on them.
- :mod:`~free_common.free.trust.recovery`: pixel-space recovery of each class from probe
  images (the inversion test of screening, independent of any generator).
- :mod:`~free_common.free.trust.fingerprint`: everything measured on one teacher.
- :mod:`~free_common.free.trust.checks`: the verdicts drawn from the fingerprints, alone
  and against the rest of the pool (near-duplicates, label agreement, weight scale).

The trust model and the measured thresholds: ``server/README.md``, "Trusting the pool".
"""
