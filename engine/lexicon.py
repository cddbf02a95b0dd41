"""The nouns people use for what COCO's 80 classes hold, for the phrase reader.

:func:`class_nouns` gives word -> {COCO class: weight} ("cyclist": person, "van": truck and
car, "mug": cup ...), each listed noun with its regular English plurals. Chosen from English,
not from any benchmark's phrases. :mod:`engine.phrase_cues` reads a phrase's head noun here.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["class_nouns"]

_NOUNS: dict[str, dict[str, float]] = {}


def _add(cls: str | dict[str, float], words: str) -> None:
    weights = {cls: 1.0} if isinstance(cls, str) else cls
    for w in words.split():
        _NOUNS[w] = weights


_add(
    "person",
    (
        "person people man men woman women boy boys girl girls child children kid kids baby "
        "babies adult adults guy guys lady ladies gentleman pedestrian pedestrians cyclist "
        "cyclists rider riders biker bikers skier player players driver walker runner jogger "
        "someone somebody persons officer policeman worker student teenager toddler father "
        "mother dad mum mom human humans passenger passengers customer shopper tourist couple "
        "crowd skater surfer swimmer dancer singer chef waiter doctor soldier figure figures "
        "lad lass youngster infant grandma grandpa grandmother grandfather granny bicyclist "
        "motorcyclist skateboarder snowboarder hiker climber spectator fisherman fishermen "
        "postman postmen nurse teacher athlete backpacker photographer cameraman cameramen"
    ),
)
_add("bicycle", "bicycle bicycles bike bikes cycle")
_add(
    {"car": 1.0, "truck": 0.6},
    (
        "car cars taxi cab sedan jeep suv vehicle vehicles automobile hatchback saloon coupe "
        "convertible limo limousine"
    ),
)
_add(
    {"motorcycle": 1.0, "bicycle": 0.3},
    "motorcycle motorcycles motorbike motorbikes scooter moped",
)
_add("airplane", "airplane aeroplane plane planes jet aircraft")
_add("bus", "bus buses coach minibus")
_add("train", "train trains tram locomotive")
_add({"truck": 1.0, "car": 0.7}, "truck trucks lorry van vans pickup minivan ambulance firetruck")
_add("boat", "boat boats ship canoe kayak yacht ferry")
_add("traffic light", "light lights")
_add("stop sign", "sign")
_add("bench", "bench benches")
_add(
    "bird",
    (
        "bird birds pigeon pigeons duck ducks seagull gull parrot chicken hen goose swan crow "
        "sparrow owl eagle duckling chick rooster"
    ),
)
_add("cat", "cat cats kitten kittens kitty tabby")
_add(
    "dog",
    (
        "dog dogs puppy puppies pup doggy terrier retriever poodle hound collie labrador husky "
        "dachshund bulldog spaniel beagle"
    ),
)
_add("horse", "horse horses pony foal stallion mare")
_add("sheep", "sheep lamb lambs")
_add("cow", "cow cows cattle calf bull ox")
_add("elephant", "elephant elephants")
_add("bear", "bear bears")
_add("zebra", "zebra zebras")
_add("giraffe", "giraffe giraffes")
_add("backpack", "backpack rucksack backpacks")
_add("umbrella", "umbrella umbrellas parasol")
_add({"handbag": 1.0, "backpack": 0.6, "suitcase": 0.5}, "handbag bag bags purse")
_add("tie", "tie necktie")
_add("suitcase", "suitcase luggage suitcases")
_add("frisbee", "frisbee")
_add("sports ball", "ball balls football basketball volleyball")
_add("kite", "kite")
_add("skateboard", "skateboard")
_add("surfboard", "surfboard")
_add("tennis racket", "racket racquet")
_add({"bottle": 1.0, "cup": 0.5}, "bottle bottles")
_add({"wine glass": 1.0, "cup": 0.6}, "glass glasses")
_add({"cup": 1.0, "bottle": 0.4, "wine glass": 0.4}, "cup cups mug mugs tumbler")
_add("fork", "fork")
_add("knife", "knife")
_add("spoon", "spoon")
_add("bowl", "bowl bowls")
_add("banana", "banana bananas")
_add("apple", "apple apples")
_add("sandwich", "sandwich")
_add("orange", "orange oranges")  # "the orange cat": cat is the later noun, the head
_add("broccoli", "broccoli")
_add("carrot", "carrot carrots")
_add("pizza", "pizza")
_add("donut", "donut doughnut")
_add("cake", "cake")
_add("chair", "chair chairs stool armchair recliner")
_add("couch", "couch sofa settee loveseat")
_add("potted plant", "plant plants flowerpot houseplant")
_add("bed", "bed")
_add("dining table", "table tables desk")
_add("toilet", "toilet")
_add("tv", "tv television monitor screen")
_add("laptop", "laptop computer notebook")
_add("mouse", "mouse")
_add("remote", "remote")
_add("keyboard", "keyboard")
_add("cell phone", "phone phones smartphone cellphone mobile iphone telephone")
_add("microwave", "microwave")
_add("oven", "oven stove")
_add("sink", "sink")
_add("refrigerator", "refrigerator fridge")
_add("book", "book books")
_add("clock", "clock")
_add("vase", "vase")
_add("scissors", "scissors")
_add("teddy bear", "teddy teddybear")
_add("hot dog", "hotdog hotdogs")
_add("toothbrush", "toothbrush")


def _regular_plurals(word: str) -> tuple[str, ...]:
    """English's regular plurals of a noun.

    "ship" -> ships, "lorry" -> lorries, "knife" -> knives, "couch" -> couches (irregular ones,
    "men", "mice", are listed by hand).
    """
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return (word + "es",)
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return (word[:-1] + "ies",)
    if word.endswith("fe"):
        return (word + "s", word[:-2] + "ves")
    return (word + "s",)


def class_nouns(exclude: Iterable[str] = ()) -> dict[str, dict[str, float]]:
    """Word -> {COCO class: weight}: the listed nouns and their regular plurals.

    A plural reads as its noun ("the ships", "two sofas") unless the word is listed itself (as
    another class's, or already) or is in ``exclude`` (the phrase reader's verbs of moving: "the
    boy who cycles", not "the cycles").
    """
    out = dict(_NOUNS)
    skip = set(exclude)
    for word, weights in _NOUNS.items():
        for plural in _regular_plurals(word):
            if plural not in skip:
                out.setdefault(plural, weights)
    return out
