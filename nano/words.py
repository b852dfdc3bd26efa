"""Word lists for generated repos; the held-out split uses words the training split never sees."""
from __future__ import annotations

TRAIN_VERBS = """
add align apply archive assign attach balance bind build bundle cache calc check clean clip collect
combine compile compute count crop decode derive draw drop emit encode estimate expand export extract
fetch fill filter find fit flag fold format gather grade group guess hash index join keep label load
log lookup map mark measure merge mix move note order pack parse pick plan plot poll post predict
prepare print probe push rank rate read reduce render repair report reset resolve route sample save
scale scan score seed send shift show sort split stack store sum swap sync tally tag test tidy trace
track trim tune update verify walk wrap write
""".split()

TRAIN_NOUNS = """
account agent alarm album anchor answer apple arrow asset atlas audit badge banner barrel basket beacon
bell bill block board bonus border bottle branch bridge bucket budget buffer button cabin camera candle
canvas carbon card cargo carpet castle chain chart cheese cipher circle city claim clock cloud coin
column comment copper corner cotton course credit crown cursor cycle debt deck delta desk device dial
digit dinner domain door draft drawer dream engine entry event fabric factor farm feather fence field
figure flag flame fleet flower folder forest fossil frame fruit garden gate gauge glass grain
graph group guard harbor helmet hinge honey hotel house index island jacket jewel journal kernel kettle
ladder lamp lantern layer leaf ledger lemon lesson letter level library limit line link liquid lock
magnet manual marble market matrix meadow medal memory menu metal meter mirror model module monkey
motor mountain needle nest network night notice number ocean office orbit order oven packet paddle page
palette panel paper parcel path pattern pearl pencil pepper pillow pixel planet plate pocket point
portal potato powder prism profile puzzle quarry quota rabbit radar rail record region ribbon river
rocket roster route ruler saddle sample sensor shadow shelf shell signal silver sketch socket spiral
spring square stamp station stone story street summit table target ticket timber token tower track
trail tree tunnel valley vector velvet vessel voucher wagon wallet window winter wire yard
""".split()

HELDOUT_VERBS = """
adjust assemble borrow capture carve clamp deliver divide enroll evaluate forge grind harvest inspect
launch melt mend negotiate nudge obtain polish quench refine relay rotate salvage sharpen sift smooth
stitch temper thread unfold weave weigh whisk
""".split()

HELDOUT_NOUNS = """
acorn almond amber anvil apron badger bamboo beetle biscuit blanket bramble cactus canyon cedar cherry
chisel cobalt comet compass coral cricket crystal dagger dolphin ember falcon fern ferry flask glacier
goblet granite gravel hammock hazel heron iceberg igloo ivory jasmine juniper kayak kiwi lagoon lilac
lobster locket mango maple mitten mosaic nectar nutmeg oasis olive otter oyster parrot pebble pelican
quartz quill raven reef saffron salmon sapphire scarf slate sparrow spruce squid teapot thistle thimble
tulip turtle velcro walnut willow zebra
""".split()
