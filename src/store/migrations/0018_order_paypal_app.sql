-- Which PayPal made each order ("sandbox:<client id>", "live:<client id>"), recorded with its
-- PayPal order id: after the operator changes PayPal apps or environments, an order the other
-- one made is not asked of this one, whose "no such order" would read as "nothing was charged"
-- while the other may hold the buyer's money (found by an independent check). NULL: made
-- before this was recorded.
ALTER TABLE orders ADD COLUMN paypal_app TEXT;
