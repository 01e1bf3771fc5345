"""bertbook: the library under the book — attention, the encoder, BERT, DistilBERT,
pretraining and distillation, with exact parity to Hugging Face `transformers`."""
from .attention import MultiHeadAttention, scaled_dot_product_attention
from .bert import (BertConfig, BertEmbeddings, BertForPreTraining, BertForSequenceClassification,
                   BertModel, ModelOutput)
from .device import autocast, get_device
from .distilbert import (DistilBertForMaskedLM, DistilBertForSequenceClassification, DistilBertModel,
                         default_student_layers, student_from_teacher)
from .encoder import Encoder, EncoderLayer, FeedForward
from .hf import from_pretrained, from_transformers, save_pretrained, to_transformers
from .pretrained import load_minilm

__version__ = "0.1.0"
