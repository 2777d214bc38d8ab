"""What one exchange cost, from its billed token counts and the prices in force.

Pure arithmetic, no I/O. Products are computed in ``Decimal`` from the catalogue's exact
prices and rounded to ``float`` once, so a cost is the correctly rounded value of the exact
figure rather than an accumulation of binary rounding errors.
"""

from __future__ import annotations

from sidecar.accounting.catalogue import Catalogue, Prices
from sidecar.exchange import Cost, Exchange, Usage

__all__ = ["cost_of", "price_exchange"]


def cost_of(usage: Usage, prices: Prices) -> Cost:
    """Price ``usage`` at ``prices``; tokens not reported count as zero.

    When the upstream reported neither ``cache_hit`` nor ``cache_miss``, every input token is
    billed as a miss (the upstream had no cache, or said nothing about it). When only
    ``cache_hit`` is known, the miss count is ``input - cache_hit``, as the contract defines.
    ``cache_write`` (Anthropic-style upstreams) has no DeepSeek price and is not costed.
    """
    hit = usage.cache_hit or 0
    miss = usage.cache_miss
    if miss is None:
        miss = max((usage.input or 0) - hit, 0)
    output = usage.output or 0
    return Cost(
        cache_hit_usd=float(hit * prices.cache_hit),
        cache_miss_usd=float(miss * prices.cache_miss),
        output_usd=float(output * prices.output),
        savings_usd=float(hit * (prices.cache_miss - prices.cache_hit)),
    )


def price_exchange(ex: Exchange, catalogue: Catalogue) -> None:
    """Set ``ex.cost`` at the prices in force when the exchange started, or mark it unpriced.

    The model as reported is priced through the catalogue's alias map; exchanges without
    usage (errors, aborted streams) have nothing to price.
    """
    if ex.usage is None or ex.model is None:
        return
    prices = catalogue.prices_at(ex.model, ex.started_wall)
    if prices is None:
        ex.unpriced = True
        return
    ex.cost = cost_of(ex.usage, prices)
    ex.cost_usd = ex.cost.total
