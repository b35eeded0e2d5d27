"""Monitoring: is the data a deployed model sees still like the data it was trained on?

Devices cannot ship raw samples home, so drift is measured on small summaries that a
microcontroller can keep: fixed-bin histograms per input feature, prediction counts per
class and a confidence histogram. The pieces:

- reference.py  the reference profile, computed from the training split when a bundle is
                made and shipped inside it: bin edges, reference histograms, the class
                distribution of predictions and a confidence histogram. It defines the bin
                rule that devices and server both apply.
- drift.py      drift statistics on those histograms (PSI, Jensen–Shannon, normed
                Wasserstein, chi-squared, z-test; KS where raw samples exist), per feature,
                the dataset verdict (drift when at least half of the features drift), and
                prediction and confidence drift.
- config.py     DriftConfig: the method and threshold per feature kind, with Evidently's
                defaults; MonitoringConfig, the project file's `monitoring:` section.
- summaries.py  how one model input becomes the profile's feature row (columns, bands of
                a spectrogram, channels or row bands of an image).
- policy.py     the bundle members monitoring/profile.json and monitoring/policy.json.
- sketch.py     SketchAccumulator: one window of a device's inferences in the profile's
                bins, the body a device sends to the server.

The statistics are plain NumPy (SciPy for p-values) and import nothing heavy at module
level. docs/drift.md states every formula, default and threshold.
"""
