"""0.6.1's market data beside the REST client: the symbol master files and the IPO schedule.

Nothing here is imported by ``import korea_investment_stock``; the client loads
these modules when one of their methods is first called (``pandas`` only when a
DataFrame is asked for).
"""
