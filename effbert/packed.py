"""Padding-free DistilBERT: a batch's sequences packed end to end, no pad token computed.

The classifier below runs the checkpoint's own modules (embeddings, attention projections, layer
norms, FFN, head, quantized or not) over tokens packed into one ``(tokens, dim)`` matrix;
attention runs per sequence through flash attention's variable-length kernel
(``torch.nn.attention.varlen``). With ``cls_last`` the last layer is computed for each
sequence's first token only, the one token the classification head reads: the outputs are the
same, with a sixth of the matrix products and layer norms less.
"""

from __future__ import annotations

import torch

from effbert.data import Batch


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """Padded ``(batch, length)`` tokens to packed model inputs (on the host, outside windows).

    Returns:
        ``input_ids`` and ``position_ids`` of shape ``(tokens,)``, ``cu_seqlens`` (int32, the
        start of each sequence and the total), ``max_len`` (an int) and ``lengths`` (a list).
    """
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    if not torch.equal(mask, positions < lengths[:, None]):
        raise ValueError("packing needs right-padded inputs (pad tokens after each sequence)")
    cu_seqlens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu_seqlens[1:] = lengths.cumsum(0)
    return {
        "input_ids": input_ids[mask],
        "position_ids": positions[mask],
        "cu_seqlens": cu_seqlens,
        "max_len": int(lengths.max()),
        "lengths": lengths.tolist(),
    }


def packed_inputs(batch: Batch, device: torch.device) -> dict:
    """A batch's packed inputs on ``device``; ``lengths`` stays a host list."""
    packed = pack(batch.input_ids, batch.attention_mask)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in packed.items()}


class PackedClassifier(torch.nn.Module):
    """A ``DistilBertForSequenceClassification``'s modules run over packed sequences."""

    def __init__(self, classifier: torch.nn.Module, cls_last: bool = False) -> None:
        super().__init__()
        self.classifier_model = classifier
        self.cls_last = cls_last
        config = classifier.config
        self.n_heads, self.head_dim = config.n_heads, config.dim // config.n_heads

    @property
    def config(self):
        return self.classifier_model.config

    def forward(self, input_ids, position_ids, cu_seqlens, max_len: int, lengths=None):
        model = self.classifier_model
        bert = model.distilbert
        emb = bert.embeddings
        hidden = emb.LayerNorm(
            emb.word_embeddings(input_ids) + emb.position_embeddings(position_ids)
        )
        layers = bert.transformer.layer
        starts = cu_seqlens[:-1].long()
        for i, layer in enumerate(layers):
            last = self.cls_last and i == len(layers) - 1
            hidden = self._block(
                layer, hidden, cu_seqlens, max_len, lengths, starts if last else None
            )
        pooled = hidden if self.cls_last else hidden[starts]
        pooled = torch.relu(model.pre_classifier(pooled))
        return model.classifier(pooled)

    def _block(self, layer, hidden, cu_seqlens, max_len, lengths, query_rows):
        attn = layer.attention
        shape = (-1, self.n_heads, self.head_dim)
        residual = hidden if query_rows is None else hidden[query_rows]
        q = attn.q_lin(residual).view(shape)
        k = attn.k_lin(hidden).view(shape)
        v = attn.v_lin(hidden).view(shape)
        out = self._attend(q, k, v, cu_seqlens, max_len, lengths, query_rows is not None)
        hidden = layer.sa_layer_norm(attn.out_lin(out.reshape(q.shape[0], -1)) + residual)
        ffn = layer.ffn
        return layer.output_layer_norm(ffn.lin2(ffn.activation(ffn.lin1(hidden))) + hidden)

    def _attend(self, q, k, v, cu_seqlens, max_len, lengths, one_query):
        n = cu_seqlens.shape[0] - 1
        cu_q = torch.arange(n + 1, dtype=torch.int32, device=q.device) if one_query else cu_seqlens
        if q.is_cuda:
            from torch.nn.attention.varlen import varlen_attn

            return varlen_attn(q, k, v, cu_q, cu_seqlens, 1 if one_query else max_len, max_len)
        # CPU: the same attention one sequence at a time (varlen kernels are CUDA-only)
        outs, start = [], 0
        for i, length in enumerate(lengths):
            qs = q[i : i + 1] if one_query else q[start : start + length]
            ks, vs = k[start : start + length], v[start : start + length]
            o = torch.nn.functional.scaled_dot_product_attention(
                qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1)
            )
            outs.append(o.transpose(0, 1))
            start += length
        return torch.cat(outs)
