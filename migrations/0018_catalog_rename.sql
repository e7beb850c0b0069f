-- A catalog gift's name must not be another company's product name: 'universe'
-- gets a new catalog version with a neutral name (same price and tier). The
-- catalog is versioned, so version 1 stays as it was (gifts already sent keep
-- the name they were sent under in gifts.gift_name); gift_catalog_current now
-- answers version 2.
INSERT INTO gift_catalog (id, version, name, coins, tier, active)
SELECT id, version + 1, 'Universe', coins, tier, active
  FROM gift_catalog_current
 WHERE id = 'universe' AND name <> 'Universe';
