"""Money: the model catalogue and its prices, the cost of an exchange, the balance poller."""
