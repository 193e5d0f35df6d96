"""Building blocks shared by methods: MLP heads and EMA targets."""

from sslreg.nn.ema import cosine_momentum, ema_update, make_target
from sslreg.nn.heads import mlp

__all__ = ["cosine_momentum", "ema_update", "make_target", "mlp"]
