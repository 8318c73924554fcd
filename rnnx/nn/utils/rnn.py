"""rnnx.nn.utils.rnn, torch.nn.utils.rnn's place: rnnx.utils.rnn's PackedSequence,
pack_padded_sequence, pad_packed_sequence, pack_sequence and pad_sequence."""
from ...utils.rnn import (PackedSequence, pack_padded_sequence, pack_sequence,
                          pad_packed_sequence, pad_sequence)

__all__ = ["PackedSequence", "pack_padded_sequence", "pad_packed_sequence", "pack_sequence",
           "pad_sequence"]
