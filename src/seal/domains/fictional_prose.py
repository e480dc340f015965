"""Fictional-knowledge passages written as natural prose, in varied genres.

The sibling of `seal.domains.fictional`, whose passages state one fact per short declarative sentence.
Here a passage is an encyclopedia entry, an obituary, a news item, a museum label, a manual, a travel
guide, a company history, a naturalist's field notes, a craft history, a sports report, a court record
or a letter: 100-180 words, several facts to a sentence (subordinate and relative clauses, appositions,
pronouns), every name invented (the name supply and exclusions of `seal.domains.fictional`, so the two
sets can be made entity-disjoint). The output is the SEAL passage format every seal command reads, with
the extra fields of the other generator: each question's `fact` and `kind`, each passage's `entities`.

A genre declares its slots (the main entity first, then the entities and values it relates to), the
facts between them, and its sentences in order, each with several wordings, every wording of a sentence
stating the same facts. Questions come from the facts, worded by their relation:
`forward` asks for a fact's object given its subject ("Who founded the Titam Society?"), `reverse` for its
subject given its object ("Who was born in Pemasoli?"), and `two-hop` chains two facts through an
entity the question does not name ("In which town was the founder of the Titam Society born?"). No
answer is ever the main entity: closed-book prompts show it as the topic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seal.domains.fictional import (
    MAX_PASSAGES,
    Entity,
    FictionalConfigError,
    Names,
    config_from,
    excluded_words,
    words_in,
    write_splits,
)

# --- relations: how a fact is asked --------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """A fact `subject -> object`. `forward`: questions naming the subject ({s}), asking for the object;
    `reverse`: naming the object ({o}), asking for the subject; `role`: the object described from the
    subject ("the founder of {s}"), which stands for it in a two-hop question."""

    name: str
    subject: str
    object: str  # an entity type, or "year" / "number"
    forward: tuple[str, ...]
    reverse: tuple[str, ...] = ()
    role: str = ""


_RELATIONS = (
    Relation("born_in", "person", "town", ("In which town was {s} born?", "Where was {s} born?"),
             ("Who was born in {o}?",), "the town where {s} was born"),
    Relation("born_year", "person", "year", ("In what year was {s} born?", "When was {s} born?")),
    Relation("died_year", "person", "year", ("In what year did {s} die?", "When did {s} die?")),
    Relation("died_in", "person", "town", ("In which town did {s} die?", "Where did {s} die?"),
             ("Who died in {o}?",), "the town where {s} died"),
    Relation("teacher", "person", "person", ("Who taught {s}?", "Who was the teacher of {s}?"),
             ("Who was a pupil of {o}?", "Whom did {o} teach?"), "the teacher of {s}"),
    Relation("spouse", "person", "person", ("Who did {s} marry?", "Who was {s} married to?"),
             ("Who married {o}?",), "the spouse of {s}"),
    Relation("books", "person", "number", ("How many books did {s} write?",)),
    Relation("lives_in", "person", "town", ("In which town does {s} live?", "Where does {s} live?"),
             ("Who lives in {o}?",), "the town where {s} lives"),
    Relation("works_for", "person", "organisation", ("Which firm does {s} work for?",),
             (), "the firm {s} works for"),
    Relation("wrote_to", "person", "person", ("Who did {s} write to?", "To whom did {s} write?"),
             ("Who wrote to {o}?",), "the person {s} wrote to"),
    Relation("founded_by", "organisation", "person", ("Who founded {s}?", "Who set up {s}?"),
             ("What did {o} found?", "Which organisation did {o} set up?"), "the founder of {s}"),
    Relation("founded_year", "organisation", "year", ("In what year was {s} founded?", "When was {s} founded?")),
    Relation("based_in", "organisation", "town", ("In which town is {s} based?", "Where is {s} based?"),
             ("Which organisation is based in {o}?",), "the town where {s} is based"),
    Relation("employees", "organisation", "number",
             ("How many people does {s} employ?", "How many people work for {s}?")),
    Relation("led_by", "organisation", "person", ("Who leads {s}?", "Who is the head of {s}?"),
             ("Which organisation does {o} lead?",), "the head of {s}"),
    Relation("makes", "organisation", "invention", ("What does {s} make?", "Which machine does {s} make?"),
             ("Which firm makes {o}?",), "the machine made by {s}"),
    Relation("bought", "organisation", "organisation", ("Which firm did {s} buy?",),
             ("Which firm bought {o}?",), "the firm bought by {s}"),
    Relation("opens_works_in", "organisation", "town", ("In which town will {s} open a new works?",),
             ("Which firm will open a new works in {o}?",), "the town where {s} will open a new works"),
    Relation("sued_by", "organisation", "person", ("Who brought the case against {s}?",),
             ("Which firm did {o} take to court?",), "the person who brought the case against {s}"),
    Relation("judge", "organisation", "person", ("Which judge heard the case against {s}?",),
             (), "the judge who heard the case against {s}"),
    Relation("court_in", "organisation", "town", ("In which town was the case against {s} heard?",)),
    Relation("case_year", "organisation", "year", ("In what year was the case against {s} heard?",)),
    Relation("damages", "organisation", "number", ("How many crowns in damages did {s} have to pay?",)),
    Relation("invented_by", "invention", "person", ("Who invented {s}?",),
             ("What did {o} invent?",), "the inventor of {s}"),
    Relation("invented_year", "invention", "year", ("In what year was {s} invented?", "When was {s} invented?")),
    Relation("tested_on", "invention", "river", ("On which river was {s} first tested?",),
             ("What was first tested on {o}?",), "the river where {s} was first tested"),
    Relation("made_in", "invention", "town", ("In which town was {s} made?", "Where was {s} made?"),
             ("What was made in {o}?",), "the town where {s} was made"),
    Relation("made_year", "invention", "year", ("In what year was {s} made?",)),
    Relation("made_by", "invention", "organisation", ("Which firm makes {s}?", "Who makes {s}?"),
             ("What does {o} make?",), "the maker of {s}"),
    Relation("repaired_in", "invention", "town", ("In which town is {s} repaired?",)),
    Relation("donated_by", "invention", "person", ("Who gave {s} to the museum?",),
             ("What did {o} give to the museum?",), "the person who gave {s} to the museum"),
    Relation("donated_year", "invention", "year", ("In what year was {s} given to the museum?",)),
    Relation("parts", "invention", "number", ("How many parts does {s} have?",)),
    Relation("weight", "invention", "number", ("How many kilograms does {s} weigh?",)),
    Relation("capacity", "invention", "number", ("How many litres does {s} hold?",)),
    Relation("price", "invention", "number", ("How many crowns does {s} cost?",)),
    Relation("population", "town", "number", ("How many people live in {s}?", "What is the population of {s}?")),
    Relation("on_river", "town", "river", ("On which river does {s} stand?", "Which river runs past {s}?"),
             ("Which town stands on {o}?",), "the river {s} stands on"),
    Relation("town_founded", "town", "year", ("In what year was {s} founded?",)),
    Relation("near_lake", "town", "lake", ("Which lake lies near {s}?",),
             ("Which town lies near {o}?",), "the lake near {s}"),
    Relation("mayor", "town", "person", ("Who is the mayor of {s}?",),
             ("Of which town is {o} the mayor?",), "the mayor of {s}"),
    Relation("museum", "town", "organisation", ("Which museum is in {s}?",), (), "the museum in {s}"),
    Relation("described_by", "species", "person", ("Who first described {s}?",),
             ("Which bird did {o} first describe?",), "the person who first described {s}"),
    Relation("described_year", "species", "year", ("In what year was {s} first described?",)),
    Relation("found_at", "species", "lake", ("At which lake does {s} breed?",),
             ("Which bird breeds at {o}?",), "the lake where {s} breeds"),
    Relation("feeds_on", "species", "plant", ("What does {s} feed on?",), ("Which bird feeds on {o}?",)),
    Relation("wingspan", "species", "number", ("How many centimetres is the wingspan of {s}?",)),
    Relation("species_weight", "species", "number", ("How many grams does {s} weigh?",)),
    Relation("nest_count", "species", "number", ("How many nesting pairs of {s} were counted?",)),
    Relation("dish_from", "dish", "town", ("Which town does {s} come from?",),
             ("Which dish comes from {o}?",), "the town {s} comes from"),
    Relation("first_made_by", "dish", "person", ("Who first made {s}?",),
             ("What did {o} first make?",), "the cook who first made {s}"),
    Relation("first_made_year", "dish", "year", ("In what year was {s} first made?",)),
    Relation("flavoured_with", "dish", "plant", ("Which herb gives {s} its flavour?", "What is {s} flavoured with?"),
             ("Which dish is flavoured with {o}?",)),
    Relation("flour", "dish", "number", ("How many grams of flour go into {s}?",)),
    Relation("bake_minutes", "dish", "number", ("For how many minutes is {s} baked?",)),
    Relation("beat", "team", "team", ("Which team did {s} beat?",), ("Which team beat {o}?",),
             "the team beaten by {s}"),
    Relation("coach", "team", "person", ("Who coaches {s}?", "Who is the coach of {s}?"),
             ("Which team does {o} coach?",), "the coach of {s}"),
    Relation("scorer", "team", "person", ("Who scored the winning goal for {s}?",),
             ("For which team did {o} score the winning goal?",), "the player who scored the winning goal for {s}"),
    Relation("goal_minute", "team", "number", ("After how many minutes did {s} score the winning goal?",)),
    Relation("crowd", "team", "number", ("How many spectators watched {s} win?",)),
    Relation("home_town", "team", "town", ("Which town is {s} from?",), ("Which team is from {o}?",),
             "the home town of {s}"),
    Relation("team_founded", "team", "year", ("In what year was {s} founded?",)),
)  # fmt: skip
RELATIONS: dict[str, Relation] = {r.name: r for r in _RELATIONS}


# --- genres: what a passage says and how -----------------------------------------------------------


@dataclass(frozen=True)
class Genre:
    """`slots`: name -> kind, the main entity first. A kind is an entity type (`person`, `town`, `river`,
    `lake`), `<type>:<noun>|<noun>...` (an entity named by an invented word and one of the nouns:
    organisation, invention, species, plant, dish, team), `year:<from>-<to>`, `number:<from>-<to>`, or
    `pick:<word>|<word>...` (a common word, no fact). `facts`: (relation, subject slot, object slot).
    `sentences`: in order, each a tuple of wordings (str.format templates over the slots; "" leaves the
    sentence out); every wording of a sentence states the same facts."""

    name: str
    slots: Mapping[str, str]
    facts: tuple[tuple[str, str, str], ...]
    sentences: tuple[tuple[str, ...], ...]

    @property
    def main(self) -> str:
        return next(iter(self.slots))


GENRES: tuple[Genre, ...] = (
    Genre(
        "encyclopedia",
        {"P": "person", "T": "town", "Y1": "year:1755-1775", "Q": "person", "Y2": "year:1796-1812",
         "O": "organisation:Society|Academy|Institute|Circle", "T2": "town", "Y3": "year:1815-1830",
         "I": "invention:lamp|lens|compass|clock|pump|gauge", "R": "river", "N": "number:12-96", "S": "person",
         "Y4": "year:1832-1850", "job": "pick:clockmaker|surveyor|chemist|engineer|glassmaker|instrument maker",
         "field": "pick:optics|hydraulics|timekeeping|navigation|mechanics"},
        (("born_in", "P", "T"), ("born_year", "P", "Y1"), ("died_year", "P", "Y4"), ("teacher", "P", "Q"),
         ("invented_by", "I", "P"), ("invented_year", "I", "Y3"), ("tested_on", "I", "R"),
         ("founded_by", "O", "P"), ("founded_year", "O", "Y2"), ("based_in", "O", "T2"), ("spouse", "P", "S"),
         ("books", "P", "N")),
        (
            ("{P} ({Y1}–{Y4}) was {job.a} from {T} who spent most of {P.his} working life on problems of {field}.",
             "Born in {T} in {Y1}, {P} was {job.a} of wide interests who lived until {Y4}.",
             "{P}, {job.a} born in the town of {T} in {Y1}, died in {Y4} after a long career devoted to {field}."),
            ("As a young {P.man} {P.he} studied under {Q}, whose workshop stood near the market and who taught "
             "{P.him} to distrust any measurement taken only once.",
             "{P.His} early training came from {Q}, who took {P.him} on as an apprentice and, by most accounts, "
             "taught {P.him} more about argument than about {field}.",
             "{P.He} learned the trade under {Q}, a demanding teacher with whom {P.he} quarrelled often but "
             "corresponded for the rest of {P.his} life."),
            ("Some years later, in {Y2}, {P.he} founded {O}, which is still based in {T2} and keeps "
             "{P.his} notebooks.",
             "{P.He} was also the founder of {O}, set up in {Y2} and based to this day in {T2}.",
             "{O}, which {P.he} founded in {Y2}, is based in {T2}, where it holds a lecture in {P.his} name "
             "each winter."),
            ("In {Y3} {P.he} completed {I}, which was first tested on {R} and was soon copied by workshops "
             "across the region.",
             "{P.His} best-known invention, {I}, was finished in {Y3} and first tested on {R} in front of a "
             "small and doubtful crowd.",
             "It was {P.surname} who invented {I}; the first one, built in {Y3}, was tested on {R} during a "
             "cold spring."),
            ("{P.He} married {S}, a translator, and over the years wrote {N} books, most of them on {field}.",
             "Over {P.his} life {P.he} published {N} books; {S}, whom {P.he} had married young, edited nearly "
             "all of them.",
             "{P.His} marriage to {S} was long and settled, and in the quiet it gave {P.him} {P.he} wrote "
             "{N} books."),
            ("{P.His} letters, full of sketches and complaints about the weather, were published after "
             "{P.his} death.",
             "Colleagues remembered {P.him} as patient with instruments and impatient with people.",
             "{P.He} never travelled far, and most of {P.his} work was done in a single rented room.",
             "{P.He} was elected to several learned bodies but attended their meetings only rarely.",
             "Much of {P.his} correspondence was lost in a fire, and what survives is scattered among collectors."),
            ("", "A portrait of {P.him} hangs in the hall of {O}.",
             "Historians still argue over how much of {I} was {P.his} own idea.",
             "{P.His} name was later given to a street in the old quarter."),
        ),
    ),
    Genre(
        "obituary",
        {"P": "person", "O": "organisation:Company|Works|Trading House|Boatyard", "T2": "town", "T": "town",
         "Y1": "year:1905-1935", "Q": "person", "T3": "town", "Y2": "year:1950-1968", "N": "number:40-900",
         "S": "person", "C": "person", "trade": "pick:merchant|shipwright|printer|builder|carpenter"},
        (("founded_by", "O", "P"), ("died_in", "P", "T2"), ("born_in", "P", "T"), ("born_year", "P", "Y1"),
         ("teacher", "P", "Q"), ("born_in", "Q", "T3"), ("founded_year", "O", "Y2"), ("employees", "O", "N"),
         ("spouse", "P", "S"), ("led_by", "O", "C")),
        (
            ("{P}, who founded {O} and ran it for more than forty years, died last week at {P.his} home in {T2}.",
             "{P}, the founder of {O}, has died at {P.his} home in {T2}, a few streets from the yard where "
             "{P.he} first set up in business.",
             "The death has been announced of {P}, who founded {O}; {P.he} died peacefully in {T2}, "
             "surrounded by family."),
            ("Born in {T} in {Y1}, the youngest of six children, {P.he} left school at twelve to work for {Q}, "
             "{trade.a} born in {T3}, who taught {P.him} the business.",
             "{P.He} was born in {T} in {Y1} and was apprenticed as a child to {Q}, {trade.a} who had been born "
             "in {T3} and was said to be the hardest master on the coast.",
             "A native of {T}, where {P.he} was born in {Y1}, {P.he} learned the trade from {Q}, {trade.a} who "
             "had come over from {T3}, where {Q.he} was born."),
            ("{P.He} started {O} in {Y2} with a borrowed cart and a single room; today it employs {N} people.",
             "{O}, begun in {Y2} in one rented room, now employs {N} people, and {P.he} knew most of them "
             "by name.",
             "From its first year, {Y2}, {O} grew slowly but steadily, and it now employs {N} people across "
             "the county."),
            ("{P.He} is survived by {S}, whom {P.he} married after the war, and by their eldest child, {C}, "
             "who now leads {O}.",
             "{P.His} marriage to {S} lasted fifty years; their child {C} has led {O} since {P.he} stepped "
             "back from it.",
             "{P.He} leaves {P.his} spouse, {S}, and a child, {C}, who took over as head of {O} some years ago."),
            ("Friends remember {P.him} as a generous employer and a poor loser at cards.",
             "{P.He} was, by {P.his} own account, happiest on the water, and kept a small boat until the end.",
             "A service will be held at the chapel in {T2} on Saturday, and all are welcome.",
             "Former apprentices speak of {P.his} patience and of the long hours {P.he} kept into old age.",
             "{P.He} sang in the chapel choir for sixty years and rarely missed a Sunday."),
            ("", "Donations in {P.his} memory may be sent to the harbour school.",
             "{P.He} never took a holiday, and saw no reason why anyone else should.",
             "{P.He} was, to the end, an early riser."),
        ),
    ),
    Genre(
        "news",
        {"O": "organisation:Company|Works|Foundry|Mills", "T": "town", "I": "invention:pump|loom|stove|boiler|press",
         "T2": "town", "L": "person", "K": "number:1200-9800", "M": "person", "Y": "year:1880-1960", "F": "person",
         "N": "number:120-990", "V": "person", "W": "number:14-95", "C": "number:30-480"},
        (("based_in", "O", "T"), ("makes", "O", "I"), ("opens_works_in", "O", "T2"), ("led_by", "O", "L"),
         ("population", "T2", "K"), ("mayor", "T2", "M"), ("founded_year", "O", "Y"), ("founded_by", "O", "F"),
         ("employees", "O", "N"), ("invented_by", "I", "V"), ("weight", "I", "W"), ("price", "I", "C")),
        (
            ("{O}, the {T}-based maker of {I}, will open a new works in {T2}, its head, {L}, announced on Monday.",
             "{L}, who leads {O}, said on Monday that the firm, which makes {I} and is based in {T}, will open a "
             "new works in {T2}.",
             "The {T}-based firm {O.name}, which makes {I}, will open a new works in {T2}, according to {L}, "
             "who leads it."),
            ("{T2}, a town of {K} people, has been without a large employer since the old mill closed.",
             "The move will be welcome in {T2}, a town of {K} people whose last factory shut a decade ago.",
             "With {K} people, {T2} has long been short of work, and the new site is expected to take on "
             "hundreds."),
            ("The mayor of {T2}, {M}, called it the best news the town had heard in years.",
             "{M}, the mayor of {T2}, said the council had offered the firm land by the station at a low rent.",
             "\"We have waited a long time for this,\" said {M}, the mayor of {T2}."),
            ("Founded in {Y} by {F}, {O} now employs {N} people, most of them in {T}.",
             "{O} was set up in {Y} by {F} and has grown to employ {N} people.",
             "{F} founded {O} in {Y}; it employs {N} people today."),
            ("Demand for {I}, invented by {V}, has doubled in two years; the machine weighs {W} kilograms and "
             "costs {C} crowns.",
             "{I}, which {V} invented, weighs {W} kilograms and costs {C} crowns, and orders for it have doubled "
             "since last spring.",
             "Orders for {I}, a machine invented by {V} that weighs {W} kilograms and costs {C} crowns, have "
             "doubled since last spring."),
            ("Shares in the firm are not traded, and its accounts are not published.",
             "Union leaders said they would seek talks about pay at the new site.",
             "Some residents of {T2} have raised concerns about traffic on the river road.",
             "A spokesman said the existing works would not be affected by the move.",
             "The firm expects the first machines to leave the new site within eighteen months."),
            ("", "Building work is expected to begin in the autumn.",
             "The firm would not say how much the new works will cost.",
             "Local shopkeepers said they hoped the new jobs would bring custom back to the high street."),
        ),
    ),
    Genre(
        "museum label",
        {"I": "invention:barometer|telescope|compass|sextant|chronometer|depth gauge", "V": "person", "T": "town",
         "Y": "year:1775-1800", "T2": "town", "Y0": "year:1730-1760", "Q": "person", "Y3": "year:1805-1825",
         "N": "number:40-480", "W": "number:12-60", "R": "river", "D": "person", "Y4": "year:1905-1975"},
        (("invented_by", "I", "V"), ("made_in", "I", "T"), ("made_year", "I", "Y"), ("born_in", "V", "T2"),
         ("born_year", "V", "Y0"), ("teacher", "V", "Q"), ("died_year", "V", "Y3"), ("parts", "I", "N"),
         ("weight", "I", "W"), ("tested_on", "I", "R"), ("donated_by", "I", "D"), ("donated_year", "I", "Y4")),
        (
            ("This is {I}, made in {T} in {Y} by its inventor, {V}, and one of only three still known to exist.",
             "{I} was invented by {V}, who made this one in {T} in {Y}; it is the oldest of its kind in any "
             "collection.",
             "The object in this case, {I}, was made in {T} in {Y} by its inventor, {V}."),
            ("{V.surname} ({Y0}–{Y3}) was born in {T2} and trained under {Q}, a craftsman of some fame.",
             "Born in {T2} in {Y0}, {V.surname} had learned {V.his} craft from {Q} and worked until {V.his} "
             "death in {Y3}.",
             "{V.surname}, a native of {T2} born in {Y0}, was a pupil of {Q} and outlived most of {V.his} "
             "rivals, dying in {Y3}."),
            ("The {I.noun} holds {N} separate parts, and the whole weighs {W} kilograms.",
             "Inside {I} are {N} parts, each cut by hand; together they weigh {W} kilograms.",
             "Though it weighs only {W} kilograms, the {I.noun} contains {N} parts, some smaller than a grain "
             "of rice."),
            ("{I} was first tested on {R}, where ferrymen came to rely on it in fog.",
             "The {I.noun} was first tested on {R}, and boatmen there used it for decades afterwards.",
             "The first trial of the {I.noun} took place on {R}; the crews who saw it there called it simply "
             "\"the box\"."),
            ("{I} was given to the museum in {Y4} by {D}, who found it in an attic.",
             "{D} gave the {I.noun} to the museum in {Y4}, after it had stood for years in a farmhouse kitchen.",
             "The museum received the {I.noun} in {Y4} as a gift from {D}, a great-grandchild of the maker."),
            ("Few of {V.surname}'s other works survive, and none is complete.",
             "Similar pieces were sold throughout the region for a generation.",
             "The brass fittings are original; the wooden stand is a later replacement.",
             "Its maker signed it twice, once on the case and once, in tiny letters, on the base.",
             "Two copies made in the following decade are held by private collectors."),
            ("Labels in the maker's own hand are pasted inside the case.",
             "The glass dome was added by a later owner to keep out the dust.",
             "On the first Sunday of each month a keeper sets it working for visitors.",
             "The original leather carrying case is displayed beside it."),
            ("", "Please do not touch the glass.", "It was restored in the museum's own workshop and still works.",
             "Photography without flash is permitted."),
        ),
    ),
    Genre(
        "manual",
        {"I": "invention:pump|boiler|mangle|stove|water filter|seed drill",
         "O": "organisation:Company|Works|Engineering Company", "T": "town", "Y2": "year:1870-1935",
         "Y": "year:1840-1865", "V": "person", "T3": "town", "W": "number:12-95", "L": "number:100-480",
         "N": "number:21-96", "E": "number:140-980", "T2": "town"},
        (("made_by", "I", "O"), ("based_in", "O", "T"), ("founded_year", "O", "Y2"), ("invented_year", "I", "Y"),
         ("invented_by", "I", "V"), ("born_in", "V", "T3"), ("weight", "I", "W"), ("capacity", "I", "L"),
         ("parts", "I", "N"), ("employees", "O", "E"), ("repaired_in", "I", "T2")),
        (
            ("Thank you for choosing {I}, made by {O} of {T}, a firm founded in {Y2}.",
             "{I} is made by {O}, which was founded in {Y2} and has built machines in {T} ever since.",
             "{I} comes from the works of {O}, founded in {Y2} and based in {T}."),
            ("It was invented in {Y} by {V}, a native of {T3}, and has been improved only in small ways since.",
             "The design goes back to {Y}, when {V}, an engineer born in {T3}, invented the first {I.name}.",
             "{V}, who was born in {T3}, invented the {I.noun} in {Y}; the basic design has barely changed."),
            ("The {I.noun} weighs {W} kilograms when empty, holds {L} litres and is assembled from {N} parts, "
             "every one of which can be replaced.",
             "When empty it weighs {W} kilograms; full, it holds {L} litres. It is built from {N} parts, listed "
             "on the next page.",
             "It has {N} parts, holds {L} litres and weighs {W} kilograms, so two people should lift it "
             "together."),
            ("Every machine is checked at {O}, whose {E} workers test each one before it leaves the works.",
             "{O} employs {E} people, and one of them has signed the card inside the lid.",
             "One of the {E} people employed by {O} tested your machine before it left the works."),
            ("Repairs are carried out only at our service works in {T2}.",
             "Should the {I.noun} fail, send it to our repair shop in {T2}, and do not open the case yourself.",
             "Any repair is done in {T2}, at the address on the back cover of this booklet."),
            ("Never run the machine dry, and keep children away from the moving parts.",
             "Before first use, clean all surfaces with warm water and dry them with a soft cloth.",
             "Keep this booklet in a safe place: you will need it to order spare parts.",
             "Read all of these instructions before use, and follow them exactly.",
             "Wear gloves when cleaning the filter, as its edges are sharp."),
            ("If the {I.noun} makes a knocking sound, stop at once and check that the inlet is clear.",
             "Store it in a dry place over the winter, with the drain cock left open.",
             "Do not use it on uneven ground; always stand it on the three feet provided.",
             "Check the seals every spring and replace any that have cracked."),
            ("", "The guarantee does not cover damage caused by frost.", "Oil the joints lightly once a month.",
             "Use only the spare parts supplied by the maker."),
        ),
    ),
    Genre(
        "travel guide",
        {"T": "town", "K": "number:1200-9800", "R": "river", "Y": "year:1150-1490", "L": "lake",
         "S": "species:grebe|plover|warbler|tern|wagtail", "M": "organisation:Museum|Gallery|Boat Museum",
         "Y2": "year:1880-1965", "F": "person", "T2": "town", "D": "dish:bread|gingerbread|shortbread|cake",
         "H": "plant:root|leaf|berry|seed", "X": "person", "job": "pick:sea captain|schoolteacher|merchant"},
        (("population", "T", "K"), ("on_river", "T", "R"), ("town_founded", "T", "Y"), ("near_lake", "T", "L"),
         ("found_at", "S", "L"), ("museum", "T", "M"), ("founded_by", "M", "F"), ("founded_year", "M", "Y2"),
         ("born_in", "F", "T2"), ("dish_from", "D", "T"), ("flavoured_with", "D", "H"), ("mayor", "T", "X")),
        (
            ("{T}, a town of {K} people on {R}, was founded in {Y} and has kept much of its old centre.",
             "Founded in {Y}, {T} stands on {R} and is home to {K} people, most of whom seem to own a boat.",
             "On the banks of {R} lies {T}, founded in {Y}, a quiet town of {K} people that fills up every "
             "summer."),
            ("An hour's walk north of the town brings you to {L}, where {S} breeds among the reeds each spring.",
             "{L}, a short walk from the town, is the best place to see {S}, which breeds there in spring.",
             "The footpath from the old gate leads to {L}, near the town, where {S} breeds each May."),
            ("Do not miss {M}, founded in {Y2} by {F}, {job.a} born in {T2}, whose collection fills three "
             "floors.",
             "{M}, set up in {Y2} by {F}, {job.a} and a native of {T2}, holds the best collection of boats in "
             "the region.",
             "The town's pride is {M}, which {F}, {job.a} born in {T2}, founded in {Y2} with a gift of old "
             "maps."),
            ("{D}, which comes from {T} and is flavoured with {H}, is sold in every bakery.",
             "Try {D}, the {D.noun} that comes from {T}: its sharp taste comes from {H}, which grows wild on "
             "the hills.",
             "The local speciality is {D}, a {D.noun} from {T} flavoured with {H}."),
            ("The mayor, {X}, holds an open morning for visitors on the first Monday of each month.",
             "{T} is run by its mayor, {X}, who can often be found at the market.",
             "Visitors sometimes meet the mayor of {T}, {X}, who keeps an office above the bakery."),
            ("Trains from the coast stop twice a day; the station is ten minutes from the square.",
             "Rooms are scarce in August, so book early, and expect to pay more near the water.",
             "Most shops close at noon on Saturdays, and almost everything is shut on Sundays.",
             "The weekly market fills the square every Thursday morning, and parking is then impossible.",
             "Boats can be hired by the hour from the jetty below the old mill."),
            ("", "The best views are from the old bell tower, which is open in summer.",
             "Bring good boots: the lake paths are muddy after rain.",
             "In winter many guest houses close, but the inn by the bridge stays open."),
        ),
    ),
    Genre(
        "company history",
        {"O": "organisation:Company|Works|Trading House|Brothers", "Y": "year:1820-1870", "F": "person",
         "T2": "town", "T": "town", "I": "invention:lathe|loom|pump|stove|kettle|sewing machine",
         "Y2": "year:1880-1910", "W": "number:12-95", "O2": "organisation:Company|Works|Foundry", "T3": "town",
         "N": "number:140-980", "L": "person"},
        (("founded_year", "O", "Y"), ("founded_by", "O", "F"), ("born_in", "F", "T2"), ("based_in", "O", "T"),
         ("makes", "O", "I"), ("invented_year", "I", "Y2"), ("weight", "I", "W"), ("bought", "O", "O2"),
         ("based_in", "O2", "T3"), ("employees", "O", "N"), ("led_by", "O", "L")),
        (
            ("{O} began in {Y}, when {F}, who had been born in {T2} to a family of ferrymen, rented a shed by "
             "the harbour and founded the firm.",
             "The story of {O} starts in {Y} with {F}, a native of {T2}, who founded it with savings from ten "
             "years at sea.",
             "{F}, born in {T2}, founded {O} in {Y} with one apprentice and a borrowed lathe."),
            ("Within a decade the firm had moved to {T}, where it is still based.",
             "It moved to {T} in its second year and has been based there ever since.",
             "Its home has long been {T}, where the first workshop still stands beside the newer halls."),
            ("Its best-known product, {I}, was invented in {Y2}; at {W} kilograms it was light enough for one "
             "person to carry.",
             "In {Y2} the firm brought out {I}, invented that year, a machine of {W} kilograms that it still "
             "makes today.",
             "{O} makes {I}, which was invented in {Y2} and weighs just {W} kilograms."),
            ("In later years it bought {O2}, a smaller rival based in {T3}.",
             "Its growth came partly through buying {O2}, a firm based in {T3}, during a difficult winter.",
             "The purchase of {O2}, based in {T3}, doubled the size of the business overnight."),
            ("Today {O} employs {N} people and is led by {L}, the first head from outside the founding family.",
             "The firm now employs {N} people; its head, {L}, has led it since the old owners retired.",
             "{L}, who leads the firm today, oversees {N} workers, more than {F.surname} could ever have "
             "imagined."),
            ("Through two wars and one flood, it never once missed paying its workers.",
             "Its account books, kept since the first day, fill a whole room.",
             "The founder's first tools are kept in a glass case in the entrance hall.",
             "Its apprentices, once trained, seldom left for rival firms.",
             "A fire in the paint shop nearly ended the business in its tenth year."),
            ("In the early years the founder slept in the workshop to save the cost of lodgings.",
             "Its first customers were the fishermen and farmers of the coast, many of whom paid in kind.",
             "The firm's colours, green and white, still appear on every machine it sells.",
             "Its workers were among the first in the region to be given paid holidays."),
            ("", "A history of the firm was published for its centenary.",
             "Few family firms of its age survive in the region.",
             "The firm has never borrowed money, a point of pride with every head it has had."),
        ),
    ),
    Genre(
        "field notes",
        {"S": "species:warbler|plover|grebe|finch|bunting|lark", "L": "lake", "T": "town", "P": "person",
         "Y": "year:1790-1890", "T2": "town", "N2": "number:12-48", "W": "number:18-64", "G": "number:11-95",
         "H": "plant:sedge|thistle|clover|rush|nettle", "N": "number:120-960"},
        (("found_at", "S", "L"), ("near_lake", "T", "L"), ("described_by", "S", "P"), ("described_year", "S", "Y"),
         ("born_in", "P", "T2"), ("books", "P", "N2"), ("wingspan", "S", "W"), ("species_weight", "S", "G"),
         ("feeds_on", "S", "H"), ("nest_count", "S", "N")),
        (
            ("Early May. Out before dawn to {L}, a mile north of {T}, where {S} breeds, and nowhere else in the "
             "district.",
             "Walked from {T} to {L}, which lies close to the town, and found {S} breeding in the reeds, as "
             "the ferryman had promised.",
             "Reached {L}, near {T}, by seven; {S} breeds here in good numbers, and the first pair was calling "
             "before I had set down my bag."),
            ("The bird was first described in {Y} by {P}, a schoolmaster born in {T2} who wrote {N2} books on "
             "the birds of the coast.",
             "It was {P}, a native of {T2} and the author of {N2} books, who first described the species, in "
             "{Y}.",
             "{P} first described it in {Y}; {P.he} was born in {T2} and wrote {N2} books, of which I carry "
             "two."),
            ("A bird caught in the net had a wingspan of {W} centimetres and weighed {G} grams.",
             "The male I measured had a wingspan of {W} centimetres and weighed {G} grams on the spring "
             "balance.",
             "Wingspan {W} centimetres, weight {G} grams: larger than the books allow."),
            ("It feeds on {H}, whose seeds it strips from the stalk with a twist of the head.",
             "Watched three of them feeding on {H} for most of an hour.",
             "They feed almost entirely on {H}, which grows thickly along the eastern shore."),
            ("By evening I had counted {N} nesting pairs, more than in any year since I began.",
             "Nesting pairs counted today: {N}, which the ferryman says is fewer than when he was a boy.",
             "The count came to {N} nesting pairs, a good year by any measure."),
            ("The path along the shore was flooded in two places, and I had to wade.",
             "Ate my bread on the dry bank and watched the water for an hour without a sound.",
             "Nothing else of note, except a fox on the far side, trotting along the waterline.",
             "Spent the morning in the hide with cold feet and a full notebook.",
             "Two boys from the town came to watch and asked more questions than I could answer."),
            ("Rain from noon; home wet through.",
             "A heron stood on the old jetty the whole afternoon, watching me as I watched the birds.",
             "The wind turned east towards evening and the birds went quiet.",
             "Clear and still until dusk; the best day of the season so far."),
            ("", "Must bring the better glass next time.", "Lost a pencil in the mud.",
             "The boatman wants double next week."),
        ),
    ),
    Genre(
        "craft history",
        {"D": "dish:cake|bread|gingerbread|shortbread|pastry", "T": "town", "K": "number:1200-9800", "R": "river",
         "Y": "year:1620-1790", "C": "person", "T2": "town", "S": "person", "H": "plant:root|leaf|berry|bark|seed",
         "G": "number:300-950", "M": "number:25-90"},
        (("dish_from", "D", "T"), ("population", "T", "K"), ("on_river", "T", "R"), ("first_made_year", "D", "Y"),
         ("first_made_by", "D", "C"), ("born_in", "C", "T2"), ("spouse", "C", "S"), ("flavoured_with", "D", "H"),
         ("flour", "D", "G"), ("bake_minutes", "D", "M")),
        (
            ("{D} comes from {T}, a town of {K} people on {R}, where it was first made in {Y}.",
             "The home of {D} is {T}, a town of {K} people on {R}, and the first recorded batch was made there "
             "in {Y}.",
             "{D} comes from {T}, on {R}, where it has been made since {Y}; the town, now home to {K} people, "
             "still holds a baking contest every spring."),
            ("Tradition says it was first made by {C}, a cook born in {T2}, who had married {S}, an innkeeper, "
             "the year before.",
             "The first to make it was {C}, born in {T2}, who kept an inn by the bridge with {C.his} spouse, "
             "{S}.",
             "{C}, who was born in {T2} and married {S}, is said to have first made it to use up stale bread."),
            ("Its flavour comes from {H}, which is picked in late summer and dried under the eaves.",
             "What sets it apart is {H}, a bitter herb that gives it its flavour and is gathered on the hills "
             "above the town.",
             "It is flavoured with {H}, and without it, people in {T} insist, it is just ordinary {D.noun}."),
            ("To make it, work {G} grams of flour into the dough and bake it for {M} minutes in a hot oven.",
             "The usual recipe calls for {G} grams of flour, and it is baked for {M} minutes.",
             "Use {G} grams of flour, knead well, and bake for {M} minutes until the crust sounds hollow."),
            ("At the spring fair the town's bakers compete to make the largest one, and the winner's is shared "
             "out among the crowd.",
             "Old recipe books from the region give it a dozen different spellings, but the method barely "
             "changes.",
             "During hard winters it was often the only sweet thing a family could afford.",
             "Its shape, a low round with a cross cut into the top, has not changed in living memory."),
            ("It keeps for a week wrapped in cloth.",
             "Children in {T} are given a slice on their first day of school.",
             "Bakers elsewhere have tried to copy it, with little success.",
             "Visitors often buy it by the slab to take home.",
             "It is traditionally eaten at weddings and at funerals alike."),
            ("Every household in the town claims its own version, and arguments over the proper thickness are "
             "common.",
             "Travellers who stop at the inn by the bridge are still offered a piece with their tea.",
             "The first written recipe, in a cramped hand, is kept in the town hall.",
             "The town's bakers meet every autumn to agree the year's price."),
            ("", "Some add a handful of raisins, though purists object.", "It is best eaten warm, with butter.",
             "A little cream on top is thought by some to be an improvement."),
        ),
    ),
    Genre(
        "sports report",
        {"A": "team:Athletic|United", "B": "team:Albion|City", "N": "number:1200-9800",
         "P": "person", "M": "number:51-89", "T3": "town", "C": "person", "D": "person", "T2": "town", "T": "town",
         "Y": "year:1870-1925"},
        (("beat", "A", "B"), ("crowd", "A", "N"), ("scorer", "A", "P"), ("goal_minute", "A", "M"),
         ("born_in", "P", "T3"), ("coach", "A", "C"), ("coach", "B", "D"), ("home_town", "B", "T2"),
         ("home_town", "A", "T"), ("team_founded", "A", "Y")),
        (
            ("{A} beat {B} by two goals to one on Saturday in front of a crowd of {N}, the winning goal coming "
             "from {P} after {M} minutes.",
             "A goal from {P} after {M} minutes gave {A} a two-one win over {B}, watched by {N} spectators on "
             "a cold afternoon.",
             "In front of {N} spectators, {A} came from behind to beat {B}, and it was {P} who scored the "
             "winning goal after {M} minutes."),
            ("{P.surname}, who was born in {T3} and joined the club only last spring, was mobbed by team-mates "
             "at the final whistle.",
             "It was a fine day for {P.surname}, a native of {T3}, who had not scored all season.",
             "The young forward, born in {T3}, has now scored in three of {P.his} last four games."),
            ("\"We were patient and we got our reward,\" said {C}, the coach of {A}.",
             "{C}, who coaches {A}, praised a defence that had given away only one chance all afternoon.",
             "The coach of {A}, {C}, called it the best performance of the season."),
            ("{D}, who coaches {B}, blamed the referee, and the long journey home to {T2} will have felt longer "
             "still.",
             "For {B}, the team from {T2}, it was a third defeat in a row, and their coach, {D}, admitted that "
             "the pressure was growing.",
             "{B}, a side from {T2}, have now lost three times running, and {D}, their coach, said there were "
             "no excuses."),
            ("{A}, the club from {T}, was founded in {Y} and has never before won five games in a row.",
             "Founded in {Y}, the club from {T} now sits second in the table.",
             "It was a fifth straight win for the club, which was founded in {Y} and comes from {T}."),
            ("The two teams meet again in the cup next month.",
             "Rain fell for most of the second half, and the pitch cut up badly.",
             "Tickets for the next home game are already sold out.",
             "The win lifts the club to within two points of the top of the table.",
             "Both sides finished with ten men after a late scuffle near the corner flag."),
            ("", "{B} had the better of the first half but could not find a way through.",
             "The referee booked four players, two from each side.",
             "The visiting supporters were in good voice despite the result."),
        ),
    ),
    Genre(
        "court record",
        {"O": "organisation:Company|Works|Carriage Company|Foundry", "P": "person", "T": "town",
         "Y": "year:1850-1920", "J": "person", "T4": "town", "T3": "town",
         "I": "invention:cart|plough|wagon|winch|cider press", "T2": "town", "C": "number:12-95", "L": "person",
         "N": "number:120-980", "trade": "pick:carter|farmer|miller|baker"},
        (("sued_by", "O", "P"), ("court_in", "O", "T"), ("case_year", "O", "Y"), ("judge", "O", "J"),
         ("born_in", "J", "T4"), ("born_in", "P", "T3"), ("makes", "O", "I"), ("based_in", "O", "T2"),
         ("price", "I", "C"), ("led_by", "O", "L"), ("damages", "O", "N")),
        (
            ("The case brought by {P} against {O} was heard at the court in {T} in {Y}, before {J}, a judge "
             "born in {T4}.",
             "In {Y}, at the court in {T}, {J}, a native of {T4}, heard the case brought by {P} against {O}.",
             "{J}, who was born in {T4}, heard the case of {P} against {O} when it came before the court in "
             "{T} in {Y}."),
            ("{P.surname}, {trade.a} born in {T3}, said that the machine {P.he} had bought had broken on "
             "{P.his} first day of using it.",
             "The claimant, who was born in {T3}, told the court that {P.he} had been sold a faulty machine "
             "and had lost a month's work.",
             "{P.surname}, {trade.a} born in {T3}, claimed that the machine had collapsed under a light load "
             "within a week."),
            ("{O}, which is based in {T2} and makes {I}, sold for {C} crowns, denied any fault.",
             "For its part, {O}, a firm based in {T2} that makes {I} and sells it for {C} crowns, said the "
             "machine had been misused.",
             "The defendant, based in {T2}, makes {I} and sells it for {C} crowns; it argued that the claimant "
             "had overloaded it."),
            ("The firm's head, {L}, gave evidence on the second day.",
             "{L}, who leads the firm, told the court that no other customer had complained.",
             "The head of the firm, {L}, appeared in person and was questioned for most of a morning."),
            ("The court found for the claimant and ordered {O} to pay {N} crowns in damages.",
             "Judgment was given for {P.surname}, and the firm was ordered to pay {N} crowns in damages.",
             "{J.surname} ruled against the firm and set the damages it had to pay at {N} crowns, with costs."),
            ("The machine itself was brought into court and examined by both sides.",
             "Several witnesses from the claimant's village spoke to {P.his} good character.",
             "The hearing lasted three days, and the public gallery was full on each of them.",
             "Counsel for the firm argued at length that the claimant had ignored the instructions.",
             "The clerk recorded that both parties were represented by counsel."),
            ("", "An appeal was lodged but later withdrawn.", "The record notes that the courtroom was very cold.",
             "Costs were awarded against the defendant."),
        ),
    ),
    Genre(
        "letter",
        {"W": "person", "R": "person", "T": "town", "O": "organisation:Company|Works|Mills|Foundry",
         "N": "number:40-980", "I": "invention:loom|pump|boiler|lathe|plough", "L": "person", "V": "person",
         "T2": "town", "Y": "year:1860-1905"},
        (("wrote_to", "W", "R"), ("lives_in", "W", "T"), ("works_for", "W", "O"), ("employees", "O", "N"),
         ("makes", "O", "I"), ("led_by", "O", "L"), ("invented_by", "I", "V"), ("born_in", "V", "T2"),
         ("invented_year", "I", "Y")),
        (
            ("Dear {R},", "My dear {R},", "Dear {R}, my old friend,"),
            ("Forgive me for not writing sooner: since I moved here to {T} I have hardly had an evening to "
             "myself.",
             "I write from {T}, where I have now lived for almost a year, and where it has not stopped raining "
             "since March.",
             "You asked how I find {T}. I have lived here since the spring, and I am beginning to feel at "
             "home."),
            ("I have taken a post with {O}, which makes {I} and employs {N} people, most of them younger than "
             "me.",
             "I work for {O} now, a firm of {N} people that makes {I} for half the farms in the county.",
             "As you know, I now work for {O}; it employs {N} people and makes {I}, which you will have seen on "
             "every farm between here and the coast."),
            ("{O} is led by {L}, who walks through the workshop every morning and knows every one of us by "
             "name.",
             "The head of {O}, {L}, is strict but fair, and has twice raised our pay.",
             "{L}, who leads {O} as if it were a ship, keeps a dog under the desk and a bottle in the drawer."),
            ("{I} was invented in {Y} by {V}, a native of {T2}, who still comes in on Fridays to argue with the "
             "foremen.",
             "The inventor of {I}, {V}, was born in {T2} and invented it in {Y}; {V.he} still visits us now "
             "and then.",
             "{V}, who was born in {T2}, invented {I} in {Y}, and you would not believe how proud everyone "
             "here is of it."),
            ("", "The food at my lodgings is dreadful, but the landlady is kind.",
             "On Sundays I walk along the water and think of you all.",
             "The work is hard, but I have never slept so well in my life."),
            ("Write soon and tell me all the news from home.",
             "Please give my love to your family, and write when you can.",
             "I hope this finds you well, and that the roof has been mended at last.",
             "Do tell your mother that I am eating properly, whatever she may have heard."),
            ("Your friend, {W}", "With love, {W}", "Ever yours, {W}"),
        ),
    ),
)  # fmt: skip
GENRE_NAMES: tuple[str, ...] = tuple(g.name for g in GENRES)
_GENRES = {g.name: g for g in GENRES}
Genres = Literal[
    "encyclopedia", "obituary", "news", "museum label", "manual", "travel guide", "company history",
    "field notes", "craft history", "sports report", "court record", "letter",
]  # fmt: skip


# --- config ----------------------------------------------------------------------------------------


class ProseConfig(BaseModel):
    """How many passages, from which seed, in which genres, with how many questions of each kind."""

    model_config = ConfigDict(extra="forbid")

    passages: int = Field(
        30, ge=1, le=MAX_PASSAGES, description="passages to generate (files excluded from each other count together)"
    )
    seed: int = Field(0, description="same seed (and exclusions) -> identical output")
    min_questions: int = Field(4, ge=1, description="questions per passage, at least")
    max_questions: int = Field(6, ge=1, description="questions per passage, at most (training files: 10-15)")
    reverse_fraction: float = Field(0.2, ge=0.0, le=1.0, description="share of a passage's questions asked in reverse")
    two_hop_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="share of a passage's questions that chain two facts"
    )
    min_words: int = Field(100, ge=1, description="words per passage, at least")
    max_words: int = Field(180, ge=1, description="words per passage, at most")
    genres: list[Genres] = Field(default_factory=lambda: list(GENRE_NAMES), description="genres, in turn")

    @model_validator(mode="after")
    def _consistent(self) -> ProseConfig:
        if self.min_questions > self.max_questions:
            raise ValueError(f"min_questions ({self.min_questions}) is more than max_questions ({self.max_questions})")
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) is more than max_words ({self.max_words})")
        if self.reverse_fraction + self.two_hop_fraction > 1:
            raise ValueError(
                f"reverse_fraction + two_hop_fraction ({self.reverse_fraction} + {self.two_hop_fraction}) "
                "is more than 1"
            )
        if not self.genres:
            raise ValueError("genres is empty; choose from " + ", ".join(GENRE_NAMES))
        if len(set(self.genres)) != len(self.genres):
            raise ValueError("genres lists a genre twice")
        for name in self.genres:
            available = len(question_specs(_GENRES[name]))
            if self.max_questions > available:
                raise ValueError(
                    f"max_questions ({self.max_questions}) is more than the {available} questions "
                    f"a '{name}' passage can ask"
                )
        return self


def make_config(source: ProseConfig | Mapping[str, Any] | str | Path | None = None, **overrides: Any) -> ProseConfig:
    """A validated config from a config, a mapping, a YAML file or nothing (the defaults), with overrides.

    Raises:
        FictionalConfigError: one message naming the problem.
    """
    return config_from(ProseConfig, "fictional prose config", source, **overrides)


# --- slots -----------------------------------------------------------------------------------------

_ARTICLE_TYPES = ("organisation", "invention", "species")  # "the Titam Society"; plants, dishes and teams go bare
_VALUE_KINDS = ("year", "number")


def _kind(spec: str) -> tuple[str, tuple[str, ...]]:
    """'organisation:Society|Guild' -> ('organisation', ('Society', 'Guild'));
    'year:1700-1750' -> ('year', ('1700', '1750'))."""
    kind, _, rest = spec.partition(":")
    if kind in _VALUE_KINDS:
        return kind, tuple(rest.split("-"))
    return kind, tuple(rest.split("|")) if rest else ()


class _Ref:
    """What `{slot}` and `{slot.attribute}` of a template become: the mention, and for a person the
    surname and pronouns."""

    def __init__(self, text: str, entity: Entity | None = None, noun: str = "", female: bool = False):
        self.text = text
        self.entity = entity
        self.noun = noun
        he, his, him, man = ("she", "her", "her", "woman") if female else ("he", "his", "him", "man")
        self.he, self.his, self.him, self.man = he, his, him, man
        self.He, self.His = he.capitalize(), his.capitalize()

    @property
    def a(self) -> str:
        return f"{'an' if self.text[:1] in 'aeiou' else 'a'} {self.text}"

    @property
    def name(self) -> str:
        return self.entity.name if self.entity else self.text

    @property
    def surname(self) -> str:
        return self.entity.words[-1] if self.entity else self.text

    def __format__(self, spec: str) -> str:
        return self.text


def _entity(rng: Random, names: Names, kind: str, nouns: tuple[str, ...]) -> _Ref:
    if kind in ("person", "town", "river"):
        entity = names.entity(kind)
        return _Ref(entity.mention, entity, female=kind == "person" and rng.random() < 0.5)
    stem = names.word(2)
    if kind == "lake":
        return _Ref(f"Lake {stem}", Entity(kind, f"Lake {stem}", (stem,), f"Lake {stem}"))
    noun = rng.choice(nouns)
    name = f"{stem} {noun}"
    mention = f"the {name}" if kind in _ARTICLE_TYPES else name
    return _Ref(mention, Entity(kind, name, (stem,), mention), noun=noun.lower())


def _values(rng: Random, genre: Genre) -> dict[str, _Ref]:
    """The passage's years and numbers, all different and none inside another (an answer "12" would be
    found in "1812")."""
    ranges = {slot: _kind(spec)[1] for slot, spec in genre.slots.items() if _kind(spec)[0] in _VALUE_KINDS}
    while True:
        texts = {slot: str(rng.randint(int(lo), int(hi))) for slot, (lo, hi) in ranges.items()}
        if not any(a != b and texts[a] in texts[b] for a in texts for b in texts):
            return {slot: _Ref(text) for slot, text in texts.items()}


# --- questions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuestionSpec:
    """A question a genre's passages can ask: its wordings (over {s} or {o}), the slot it names (or, with
    `role`, the slot the role describes), and the slot that answers it."""

    kind: str  # forward, reverse, two-hop
    fact: str  # the relation, or "first+second" for two hops
    answer: str
    wordings: tuple[str, ...]
    placeholder: str  # "s" or "o"
    about: str
    role: str = ""


def _is_entity(genre: Genre, slot: str) -> bool:
    return _kind(genre.slots[slot])[0] not in (*_VALUE_KINDS, "pick")


def question_specs(genre: Genre) -> list[QuestionSpec]:
    """Every question a passage of the genre can ask, none answered by the main entity."""
    main, specs = genre.main, []

    def unique_subject(relation: str, obj: str) -> bool:
        return sum(1 for r, _, o in genre.facts if r == relation and o == obj) == 1

    for relation, subject, obj in genre.facts:
        rel = RELATIONS[relation]
        if obj != main:
            specs.append(QuestionSpec("forward", relation, obj, rel.forward, "s", subject))
        if rel.reverse and subject != main and _is_entity(genre, obj) and unique_subject(relation, obj):
            specs.append(QuestionSpec("reverse", relation, subject, rel.reverse, "o", obj))
    for first, a, x in genre.facts:
        role = RELATIONS[first].role
        if not role or not _is_entity(genre, x):
            continue
        for second, subject, obj in genre.facts:
            rel, fact = RELATIONS[second], f"{first}+{second}"
            if (second, subject, obj) == (first, a, x):
                continue
            if subject == x and obj not in (a, main):
                specs.append(QuestionSpec("two-hop", fact, obj, rel.forward, "s", a, role))
            elif obj == x and subject not in (a, main) and rel.reverse and unique_subject(second, obj):
                specs.append(QuestionSpec("two-hop", fact, subject, rel.reverse, "o", a, role))
    return specs


def _ask(rng: Random, spec: QuestionSpec, refs: Mapping[str, _Ref]) -> dict[str, str]:
    named = refs[spec.about]
    if spec.role:
        named = _Ref(spec.role.format(s=named))
    text = rng.choice(spec.wordings).format(**{spec.placeholder: named})
    return {"question": text[:1].upper() + text[1:], "answer": refs[spec.answer].name, "fact": spec.fact,
            "kind": spec.kind}  # fmt: skip


def _choose(rng: Random, specs: list[QuestionSpec], cfg: ProseConfig) -> list[QuestionSpec]:
    """`n` questions: the configured shares of two-hop and reverse ones (as far as the genre has them), then
    forward; different answers as long as there are enough of them."""
    n = rng.randint(cfg.min_questions, cfg.max_questions)
    pool = list(specs)
    rng.shuffle(pool)
    wanted = {"two-hop": round(cfg.two_hop_fraction * n), "reverse": round(cfg.reverse_fraction * n)}
    wanted["forward"] = n - sum(wanted.values())
    chosen: list[QuestionSpec] = []

    def take(candidates: Iterable[QuestionSpec], count: int, repeat_answers: bool) -> None:
        for spec in candidates:
            if count <= 0 or len(chosen) == n:
                return
            if spec not in chosen and (repeat_answers or spec.answer not in {c.answer for c in chosen}):
                chosen.append(spec)
                count -= 1

    for kind, count in wanted.items():
        take((s for s in pool if s.kind == kind), count, repeat_answers=False)
    take(pool, n - len(chosen), repeat_answers=False)
    take(pool, n - len(chosen), repeat_answers=True)
    return chosen


# --- passages --------------------------------------------------------------------------------------

_SENTENCE_START = re.compile(r"(^|[.!?]\"?\s+)([a-z])")


def _sentence(template: str, refs: Mapping[str, _Ref]) -> str:
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), template.format(**refs))


def _render(rng: Random, genre: Genre, names: Names, cfg: ProseConfig) -> dict:
    names.new_passage()
    refs: dict[str, _Ref] = {}
    entities: list[Entity] = []
    for slot, spec in genre.slots.items():
        kind, detail = _kind(spec)
        if kind == "pick":
            refs[slot] = _Ref(rng.choice(detail))
        elif kind not in _VALUE_KINDS:
            refs[slot] = _entity(rng, names, kind, detail)
            entities.append(refs[slot].entity)
    refs.update(_values(rng, genre))
    for _ in range(200):
        sentences = [_sentence(wording, refs) for wording in map(rng.choice, genre.sentences) if wording]
        context = " ".join(sentences)
        if cfg.min_words <= len(context.split()) <= cfg.max_words:
            break
    else:
        raise FictionalConfigError(
            f"fictional prose config: no wording of a '{genre.name}' passage is {cfg.min_words}-{cfg.max_words} "
            "words long; widen min_words / max_words"
        )
    questions = [_ask(rng, spec, refs) for spec in _choose(rng, question_specs(genre), cfg)]
    rng.shuffle(questions)
    return {
        "title": refs[genre.main].name,
        "context": context,
        "questions": questions,
        "genre": genre.name,
        "entities": [e.as_record() for e in entities],
    }


def _template_words() -> set[str]:
    texts: list[str] = []
    for genre in GENRES:
        texts += [wording for sentence in genre.sentences for wording in sentence]
        texts += [word for spec in genre.slots.values() for word in _kind(spec)[1]]
    for relation in RELATIONS.values():
        texts += [*relation.forward, *relation.reverse, relation.role]
    return words_in(texts) | {"lake"}


def generate(
    cfg: ProseConfig | Mapping[str, Any] | str | Path | None = None,
    exclude: Iterable[str | Path] = (),
    **overrides: Any,
) -> list[dict]:
    """Natural-prose passages in the SEAL format about invented entities, deterministic in the config and
    the exclusions.

    Args:
        cfg: a `ProseConfig`, a mapping of its fields or a YAML file of them (None: the defaults).
        exclude: passage files whose words no invented name may use, so that files are entity-disjoint.
        overrides: config fields replacing those of `cfg` (e.g. `passages=60, seed=1`).

    Returns:
        One dict per passage: `title` (the main entity), `context`, `questions` (each with `question`,
        `answer`, `fact`, `kind`: forward | reverse | two-hop), `genre` and `entities` (`type`, `name`;
        the main entity first).
    """
    cfg = make_config(cfg, **overrides)
    rng = Random(cfg.seed)
    genres = [cfg.genres[i % len(cfg.genres)] for i in range(cfg.passages)]
    rng.shuffle(genres)
    names = Names(rng, _template_words() | excluded_words(exclude))
    return [_render(rng, _GENRES[name], names, cfg) for name in genres]


DEFAULT_SPLITS: dict[str, dict[str, int]] = {
    "eval": {"passages": 200, "seed": 4001},
    "val": {"passages": 60, "seed": 5002},
    "train": {"passages": 300, "seed": 6003, "min_questions": 10, "max_questions": 15},
}


def make_split_files(
    out_dir: str | Path,
    splits: Mapping[str, Mapping[str, Any]] | None = None,
    cfg: ProseConfig | Mapping[str, Any] | None = None,
    exclude: Iterable[str | Path] = (),
) -> dict[str, Path]:
    """Write one file per split, `<out_dir>/<split>.json`, in the given order, each generated with every
    earlier split (and `exclude`) excluded, so the files share no entity.

    Args:
        out_dir: the folder for the files.
        splits: split name -> the config fields it sets (passages, seed, question counts), in generation
            order; default `DEFAULT_SPLITS` (eval 200 passages seed 4001, val 60 seed 5002, train 300 seed
            6003 with 10-15 questions a passage).
        cfg: the other generator fields.
        exclude: further passage files every split avoids (`data/fictional/*.json` for the shipped files).
    """
    base = make_config(cfg)
    configs = {name: make_config(base, **fields) for name, fields in (splits or DEFAULT_SPLITS).items()}
    return write_splits(out_dir, configs, generate, exclude)
