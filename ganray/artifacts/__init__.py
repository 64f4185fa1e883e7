"""The trial record: everything a trial leaves behind, and the one writer and reader of it.

  layout     where each file of an experiment and its trials lives; verdict names
  recorder   TrialRecorder: the one writer (both runners use it), and the metrics-before-checkpoint order
  reader     the one reader (the report, `ganray eval` on a trial, the sweep summary)
  segments   files that grow, written as segments that each reach the bucket about once
  uploader   background uploads of a trial's record to its bucket
  events     TensorBoard event records
  hparams    the trial's row of TensorBoard's HParams table (sweep values, last metrics, verdict code)
  images     sample grids, scatter plots, GIFs
"""
