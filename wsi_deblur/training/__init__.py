"""Training and evaluation data for the DBMID networks, and the ``wsi-deblur train`` command behind them."""
