"""``Explainer``: the top words behind a model version's decisions, computed from its torch weights.

Off the serving path (explainer service, ``driftline explain``), with gradient x input from
:mod:`driftline.models.explain.gradients`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from driftline.models.artifacts import read_meta
from driftline.models.classifier import load_classifier
from driftline.models.encoders import mean_pool
from driftline.models.explain.gradients import TOP_K, attribution_scores, merge_to_words

METHOD = "grad_x_input"

Explanation = list[tuple[str, float]]


class Explainer:
    """Word attributions for one exported version (``<repository>/<model>/<version>``)."""

    method = METHOD

    def __init__(
        self,
        version_dir: str | Path,
        device: str = "cpu",
        num_threads: int | None = None,
        *,
        top_k: int = TOP_K,
        batch_size: int = 16,
    ) -> None:
        if num_threads and num_threads > 0:  # a process sharing the machine should not take every core
            torch.set_num_threads(num_threads)
        self.version_dir = Path(version_dir)
        self.device = torch.device(device)
        self.model = load_classifier(self.version_dir).to(self.device)  # LoRA merged, eval mode
        for param in self.model.parameters():
            param.requires_grad_(False)  # gradients are taken with respect to the inputs only
        self.labels = list(self.model.labels)
        self.adapter_hash = read_meta(self.version_dir).adapter_hash
        self.top_k = top_k
        self.batch_size = max(1, batch_size)

    def explain(self, texts: Sequence[str], labels: Sequence[str] | None = None) -> list[Explanation]:
        """The ``top_k`` (word, score) pairs per text, highest first, towards each text's label.

        ``labels`` (one per text) names the label to explain; None explains the label these weights
        predict. An empty text has an empty explanation; an unknown label raises ``ValueError``.
        """
        if isinstance(texts, str):
            raise TypeError("explain() takes a sequence of texts, not a single string")
        if labels is not None and len(labels) != len(texts):
            raise ValueError(f"{len(labels)} labels for {len(texts)} texts")
        targets = None if labels is None else [self._label_index(label) for label in labels]
        out: list[Explanation] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            out.extend(
                self._explain_batch(chunk, None if targets is None else targets[start : start + len(chunk)])
            )
        return out

    def _label_index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise ValueError(f"label {label!r} is not one of this version's labels {self.labels}") from None

    def _explain_batch(self, texts: list[str], targets: list[int] | None) -> list[Explanation]:
        m = self.model
        texts = m.prepare(texts)
        enc = m.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=m.max_length,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        input_ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        extra = {}
        if "token_type_ids" in enc:
            extra["token_type_ids"] = enc["token_type_ids"].to(self.device)
        embeddings = m.encoder.get_input_embeddings()(input_ids).detach().requires_grad_(True)
        with torch.enable_grad():
            hidden = m.encoder(inputs_embeds=embeddings, attention_mask=mask, **extra).last_hidden_state
            logits = m.head(mean_pool(hidden, mask))
            if targets is None:
                target = logits.argmax(dim=-1)
            else:
                target = torch.tensor(targets, dtype=torch.long, device=logits.device)
            scores = attribution_scores(logits, target, embeddings, mask)
        return [
            merge_to_words(
                text, enc.word_ids(i), enc["offset_mapping"][i].tolist(), scores[i].tolist(), self.top_k
            )
            for i, text in enumerate(texts)
        ]
