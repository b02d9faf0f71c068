"""Stage 1, records: rows read from a source, recognised in their format, validated.

- :mod:`~lightning_dpo.data.records.rows`: reading rows from files, folders, saved or
  cached datasets (``read_rows``).
- :mod:`~lightning_dpo.data.records.formats`, :mod:`~lightning_dpo.data.records.conversations`,
  :mod:`~lightning_dpo.data.records.messages`, :mod:`~lightning_dpo.data.records.chat`:
  explicit, implicit and conversational rows (TRL, ShareGPT, OpenAI) as records.
- :mod:`~lightning_dpo.data.records.validation`: what is wrong with a row, error or skip.
- :mod:`~lightning_dpo.data.records.reading`: a source to validated records
  (``load_records``); :mod:`~lightning_dpo.data.records.jsonl` for one JSON-lines file.
- :mod:`~lightning_dpo.data.records.splits` (hold-out by prompt),
  :mod:`~lightning_dpo.data.records.sort_task` (the embedded task),
  :mod:`~lightning_dpo.data.records.record` (``PreferenceRecord``, ``DataValidationError``).
"""
