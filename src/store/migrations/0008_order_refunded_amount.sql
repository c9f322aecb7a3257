-- What PayPal gave back of each order, in nano-USD: the sum of its partial refunds, and the
-- whole price once the order is refunded. Revenue, `orders show` and the buyer's look-up page
-- read it; before it, a partial refund showed only in the key's budget history.
ALTER TABLE orders ADD COLUMN refunded_nanos INTEGER NOT NULL DEFAULT 0 CHECK (refunded_nanos >= 0);
UPDATE orders SET refunded_nanos = amount_nanos WHERE status = 'refunded';
