"""Baichuan-7B's sentencepiece tokenizer without remote code (same encode/decode as the published BaiChuanTokenizer)."""

from __future__ import annotations

from transformers.tokenization_utils_sentencepiece import SentencePieceBackend


class BaiChuanTokenizer(SentencePieceBackend):
    """Reads `tokenizer.model` (sentencepiece) with the semantics of Baichuan-7B's tokenization_baichuan.py.

    Text is encoded by sentencepiece as the model file specifies (no extra dummy-prefix handling); `<s>` / `</s>`
    are added according to `add_bos_token` / `add_eos_token` from tokenizer_config.json.
    """

    vocab_files_names = {"vocab_file": "tokenizer.model"}
    model_input_names = ["input_ids", "attention_mask"]
    is_fast = False

    def __init__(self, vocab_file, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=None,
                 sp_model_kwargs=None, add_bos_token=True, add_eos_token=False,
                 clean_up_tokenization_spaces=False, **kwargs):
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        kwargs.pop("legacy", None)
        kwargs.pop("auto_map", None)
        super().__init__(vocab_file=vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
                         pad_token=pad_token, sp_model_kwargs=sp_model_kwargs or {}, legacy=True,
                         add_bos_token=add_bos_token, add_eos_token=add_eos_token,
                         clean_up_tokenization_spaces=clean_up_tokenization_spaces, **kwargs)

    def _tokenize(self, text, **kwargs):
        return self.sp_model.encode(text, out_type=str)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        specials = set(self.all_special_tokens)
        current: list[str] = []
        out, prev_special = "", False
        for i, token in enumerate(tokens):
            if token in specials:
                if not prev_special and i != 0:
                    out += " "
                out += self.sp_model.decode(current) + token
                prev_special, current = True, []
            else:
                current.append(token)
                prev_special = False
        return out + self.sp_model.decode(current)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + list(token_ids_0) + eos
        if token_ids_1 is not None:
            out = out + bos + list(token_ids_1) + eos
        return out

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens=False):
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        mask = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            mask += bos + [0] * len(token_ids_1) + eos
        return mask
