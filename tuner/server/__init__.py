"""Triton servers: where a binary comes from (`install`), the process tuner owns
(`embedded`), the control plane of any server (`control`), one model's configs
(`model_session`), connection settings (`connection`) and `open_server` (`context`)."""
