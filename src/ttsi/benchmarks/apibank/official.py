"""API-Bank's official verdict on one API call, decided offline: the executor's checks and each API's own rule.

The official evaluator (`api-bank/evaluator.py::Evaluator.evaluate` and `api-bank/evaluator_by_json.py` of
AlibabaResearch/DAMO-ConvAI) reads the call with `api_call_extraction.py::parse_api_call`, requires the gold's API
name, EXECUTES the call with `tool_manager.py::ToolManager.api_call` on a fresh ToolManager (databases reloaded from
`init_database/*.json` for every sample) and asks the API class's `check_api_call_correctness(result, gold_result)`,
where `gold_result` is the call's result recorded when the dialogue was written. Every rule here is written from
those sources, without their code; each function names the method it mirrors, in `api-bank/apis/<file>.py`.

Sources read: the DAMO-ConvAI repository for evaluator.py and evaluator_by_json.py (commit 5c38bb7d1d78),
tool_manager.py, api_call_extraction.py and the API files it holds (commits 8d447e26e7cd and a12362816d7b:
add_agenda, add_alarm, add_meeting, add_reminder, delete_meeting, delete_reminder, delete_scene, dictionary,
emergency_knowledge, get_user_token, modify_agenda, modify_meeting, modify_password, modify_registration,
modify_reminder, open_bank_account, query_history_today, query_meeting, query_registration, query_reminder,
query_stock, record_health_data, register_user, search_engine, send_email, timed_switch, tool_search, wiki); the
other API files from the fork PeterParkette/DAMO-ConvAI (commits 4d0acfa147c0 and 83eb7048be4b), the only stored
copy: appointment_registration, book_hotel, calculator, cancel_registration, cancel_timed_switch, check_token,
delete_account, delete_agenda, delete_alarm, document_qa, forgot_password, get_today, image_caption, modify_alarm,
play_music, query_agenda, query_alarm, query_balance, query_health_data, query_scene, speech_recognition,
symptom_search, translate.
Not found anywhere: `init_database/*.json` (the simulated databases).

What offline cannot decide, and how it is approximated (the README's API-Bank notes say the same):
- Output and exception equality after execution. A prediction whose inputs equal the gold's after the
  normalisation the API itself applies is taken to produce the gold's output: the APIs are deterministic functions
  of those inputs and the initial database. Where an API's output also depends on an input its rule does not
  compare, that input must equal the gold's: the token of the agenda / reminder APIs (another user's valid token
  would pass officially); where the output comes from a model, a web service or a database we lack (ToolSearcher,
  Dictionary, Wiki, SearchEngine, Translate), the inputs that output depends on must be equal after the API's own
  normalisation (other inputs giving the same output would pass officially).
- Dialogue state. The runner resets the databases for every sample, so a call that only works after a call made
  earlier in the same dialogue fails for every prediction, the gold included: `gold_failure` finds these from the
  dialogue's earlier `API-Request: [...]->result` lines.
"""

from __future__ import annotations

import ast
import datetime
import json
import re
from collections.abc import Callable
from typing import Any

Inputs = dict[str, Any]
# `check(pred, gold)` -> None when the check passes, else what differs. `pred` and `gold` are the `input` dicts the
# API's `call` records, values converted as the executor converts them.
Check = Callable[[Inputs, Inputs], "str | None"]

# Parameters the API's `call` gives a default or takes through **kwargs (all others are required positionals: the
# executor's call fails on a missing one). From each class's `call` signature.
DEFAULTED = {"ModifyRegistration": ("new_appointment_date", "new_appointment_doctor"),
             "RecordHealthData": ("health_data",)}
KWARGS = {"ForgotPassword": ("username", "email", "verification_code", "new_password"),
          "Translate": ("src_lang", "tgt_lang"), "GetToday": ()}
TYPES = ("int", "float", "str", "list(str)", "list", "bool")  # the executor's conversions (ToolManager.api_call)


class _Invalid:
    """A value that failed the API's format check: like the Exception object the official one returns, it equals
    nothing (not even another invalid value)."""

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return id(self)


# ---- the executor -------------------------------------------------------------------------------------------

def convert(value: str, kind: str | None) -> Any:
    """A predicted value as `ToolManager.api_call` converts it (tool_manager.py); ValueError where it fails."""
    if kind == "int":
        if not value.isdigit():
            raise ValueError("not an integer (the executor asserts str.isdigit())")
        return int(value)
    if kind == "float":
        if not value.replace(".", "", 1).isdigit():
            raise ValueError("not a number (the executor asserts digits with one '.')")
        return float(value)
    if kind == "bool":
        return value == "True"
    if kind in ("list", "list(str)"):
        return json.loads(value.replace("'", '"'))  # JSONDecodeError is a ValueError
    if kind is not None and kind not in TYPES:
        raise ValueError(f"parameter type {kind!r}: the executor raises 'invalid parameter type.'")
    return value  # str; None: an API no description in the file names (its types unknown), read as text


def gold_value(value: str, kind: str | None) -> Any:
    """A gold value as the recorded result holds it: lists as the Python literals the dialogue files write."""
    if kind in ("list", "list(str)"):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    try:
        return convert(value, kind)
    except ValueError:
        return value


def executed_inputs(api: str, params: dict[str, str], types: dict[str, str], described: bool = True,
                    gold: bool = False) -> tuple[Inputs | None, str, str]:
    """(the `input` dict the API's `call` records, "", "") or (None, reason, detail) where execution fails first.

    Mirrors `ToolManager.api_call` (an unknown parameter name or an unconvertible value fails its assertion or
    conversion, in the order the parameters are given), then the call itself (a missing required positional raises
    TypeError). `types` maps the API's parameters to their declared types; for an API no description in the file
    names (`described` False) names are not checked and undeclared values are text.
    """
    out: Inputs = {}
    for key, value in params.items():
        if described and key not in types:
            return None, "unexpected_argument", f"{key}: not a parameter of {api} (the executor's 'invalid " \
                                                "parameter name' assertion)"
        kind = types.get(key)
        try:
            out[key] = gold_value(value, kind) if gold else convert(value, kind)
        except ValueError as e:
            return None, "wrong_type", f"{key}={value!r}: {e}"
    if api == "GetToday":
        return None, "", ""  # `call(**kwargs)` records input None
    optional = DEFAULTED.get(api, ()) + KWARGS.get(api, ())
    missing = [k for k in types if described and k not in out and k not in optional]
    if missing:
        return None, "missing_argument", f"lacks {', '.join(missing)} (a required positional of {api}.call)"
    for key in DEFAULTED.get(api, ()):
        out.setdefault(key, None)
    return out, "", ""


# ---- the normalisations the APIs apply ----------------------------------------------------------------------

def _year_padded(text: str) -> str:
    """`format_check`'s first step: strip, and zero-fill a year shorter than 4 digits in a d-d-d string."""
    text = text.strip()
    parts = text.split("-")
    if len(parts) == 3 and len(parts[0]) != 4:
        parts[0] = parts[0].zfill(4)
        text = "-".join(parts)
    return text


def _strict_time(text: Any, fmt: str) -> Any:
    """`format_check` (appointment_registration, modify_registration, query_registration: %Y-%m-%d;
    timed_switch, cancel_timed_switch, record_health_data: %Y-%m-%d %H:%M:%S): re-written in `fmt`, or invalid."""
    if not isinstance(text, str):
        return _Invalid()
    try:
        return datetime.datetime.strptime(_year_padded(text), fmt).strftime(fmt)
    except ValueError:
        return _Invalid()


def _history_date(text: Any) -> Any:
    """`QueryHistoryToday.filter_date_format`: %Y-%m-%d or %m-%d, as %m-%d."""
    if not isinstance(text, str):
        return _Invalid()
    text = _year_padded(text)
    for fmt in ("%Y-%m-%d", "%m-%d"):
        try:
            return datetime.datetime.strptime(text, fmt).strftime("%m-%d")
        except ValueError:
            continue
    return _Invalid()


def _stock_key(i: Inputs) -> tuple[Any, Any]:
    """`QueryStock.format_check`: the code upper-cased and stripped (None when empty), the date as %Y-%m-%d."""
    return (str(i["stock_code"]).upper().strip() or None, _strict_time(i["date"], "%Y-%m-%d"))


def _health_key(i: Inputs) -> tuple[Any, Any, Any]:
    """`QueryHealthData.format_check`: the user id upper-cased and stripped, both times as datetimes."""
    def moment(text: Any) -> Any:
        try:
            return datetime.datetime.strptime(_year_padded(text), "%Y-%m-%d %H:%M:%S")
        except (ValueError, AttributeError):
            return _Invalid()
    return (str(i["user_id"]).upper().strip() or None, moment(i["start_time"]), moment(i["end_time"]))


def _content_overlap(pred: str, gold: str, lower: bool = False) -> bool:
    """The agenda / reminder / meeting rule: the words (split on " ") overlap with Jaccard above 0.5."""
    a, b = (pred.lower(), gold.lower()) if lower else (pred, gold)
    x, y = set(a.split(" ")), set(b.split(" "))
    return len(x & y) / len(x | y) > 0.5


def _words(text: Any) -> str:
    return " ".join(str(text).lower().split())


# ---- the checks ---------------------------------------------------------------------------------------------

def _differs(pred: Inputs, gold: Inputs, keys: tuple[str, ...], norm: Callable[[Any], Any] = lambda v: v) -> str | None:
    for key in keys:
        if norm(pred.get(key)) != norm(gold.get(key)):
            return f"{key}: {pred.get(key)!r}, gold {gold.get(key)!r}"
    return None


def _exact(pred: Inputs, gold: Inputs) -> str | None:
    """`response['input'] == groundtruth['input']` (and so equal output and exception): add_alarm, book_hotel,
    check_token, delete_account, delete_alarm, forgot_password, get_user_token, image_caption, modify_alarm,
    modify_password, open_bank_account, query_alarm, register_user, speech_recognition (and any API without a
    rule here)."""
    return _differs(pred, gold, tuple(dict.fromkeys([*gold, *pred])))


def _stripped(*keys: str, lower: bool = False) -> Check:
    def check(pred: Inputs, gold: Inputs) -> str | None:
        return _differs(pred, gold, keys, lambda v: (v.strip().lower() if lower else v.strip())
                        if isinstance(v, str) else v)
    return check


def _agenda(lower: bool, location: bool) -> Check:
    """AddAgenda / ModifyAgenda / QueryAgenda (content words case-sensitive, time and location equal) and
    AddReminder / ModifyReminder / QueryReminder (content lower-cased, time equal): `check_api_call_correctness`
    of add_agenda.py, modify_agenda.py, query_agenda.py, add_reminder.py, modify_reminder.py, query_reminder.py.
    The token is compared too (an approximation: it decides the output, which the rule compares)."""
    def check(pred: Inputs, gold: Inputs) -> str | None:
        if not _content_overlap(str(pred["content"]), str(gold["content"]), lower):
            return f"content: {pred['content']!r} shares too few words with the gold's {gold['content']!r} " \
                   "(Jaccard not above 0.5)"
        return _differs(pred, gold, ("time", "location", "token") if location else ("time", "token"))
    return check


def _meeting(pred: Inputs, gold: Inputs) -> str | None:
    """AddMeeting / ModifyMeeting / QueryMeeting (add_meeting.py, modify_meeting.py, query_meeting.py): the topic's
    words overlap with Jaccard above 0.5 (case-sensitive); every other input equal."""
    if not _content_overlap(str(pred["meeting_topic"]), str(gold["meeting_topic"])):
        return f"meeting_topic: {pred['meeting_topic']!r} shares too few words with the gold's " \
               f"{gold['meeting_topic']!r} (Jaccard not above 0.5)"
    return _differs(pred, gold, tuple(k for k in dict.fromkeys([*gold, *pred]) if k != "meeting_topic"))


def _delete_by_time(content_required: bool) -> Check:
    """DeleteAgenda (delete_agenda.py) and DeleteReminder (delete_reminder.py): when both calls succeed only the
    time is compared. Success needs the user's token (compared: it decides the output) and, for a reminder, a
    non-blank content (`delete_remind` raises otherwise)."""
    def check(pred: Inputs, gold: Inputs) -> str | None:
        if content_required and not str(pred["content"]).strip():
            return "content: blank (DeleteReminder raises 'Content should not be null')"
        return _differs(pred, gold, ("time", "token"))
    return check


def _delete_meeting(pred: Inputs, gold: Inputs) -> str | None:
    """DeleteMeeting (delete_meeting.py): when both calls succeed its rule reads `input['time']`, which a
    DeleteMeeting input does not have (it has start_time): KeyError, which the evaluator scores wrong; a call
    that fails differs from the gold's success. No prediction passes where the gold succeeded, as in every item."""
    return "DeleteMeeting's check reads input['time'], absent from its input: KeyError, scored wrong"


def _appointment(pred: Inputs, gold: Inputs) -> str | None:
    """AppointmentRegistration (appointment_registration.py): names stripped, the date through `format_check`;
    the output (a random id) is not compared, only that both calls succeed or fail alike."""
    return (_stripped("patient_name", "doctor_name")(pred, gold)
            or _differs(pred, gold, ("date",), lambda v: _strict_time(v, "%Y-%m-%d")))


def _modify_registration(pred: Inputs, gold: Inputs) -> str | None:
    """ModifyRegistration (modify_registration.py): the id and doctor stripped, the date through `format_check`
    (an omitted date or doctor is None on both sides)."""
    return (_stripped("appointment_id", "new_appointment_doctor")(pred, gold)
            or _differs(pred, gold, ("new_appointment_date",),
                        lambda v: None if v is None else _strict_time(v, "%Y-%m-%d")))


def _registration_query(pred: Inputs, gold: Inputs) -> str | None:
    """QueryRegistration (query_registration.py): the name stripped, the date through `format_check`."""
    return (_stripped("patient_name")(pred, gold)
            or _differs(pred, gold, ("date",), lambda v: _strict_time(v, "%Y-%m-%d")))


def _timed_switch(with_on: bool) -> Check:
    """TimedSwitch (timed_switch.py) and CancelTimedSwitch (cancel_timed_switch.py): the name stripped and
    lower-cased, the time through `format_check`, `on` (a bool) equal."""
    def check(pred: Inputs, gold: Inputs) -> str | None:
        return (_stripped("name", lower=True)(pred, gold)
                or _differs(pred, gold, ("time",), lambda v: _strict_time(v, "%Y-%m-%d %H:%M:%S"))
                or (_differs(pred, gold, ("on",)) if with_on else None))
    return check


def _health_record(pred: Inputs, gold: Inputs) -> str | None:
    """RecordHealthData (record_health_data.py): the user id upper-cased and stripped, the time through
    `format_check`, the health data as {name, value} texts in sorted order (an item without them: KeyError)."""
    def items(data: Any) -> Any:
        try:
            return sorted(({"name": str(d["name"]), "value": str(d["value"])} for d in data), key=str)
        except (KeyError, TypeError, IndexError):
            return _Invalid()
    return (_differs(pred, gold, ("user_id",), lambda v: str(v).upper().strip())
            or _differs(pred, gold, ("time",), lambda v: _strict_time(v, "%Y-%m-%d %H:%M:%S"))
            or _differs(pred, gold, ("health_data",), items))


_EMAIL = re.compile(r"^[a-z0-9]+[\._]?[a-z0-9]+[@]\w+[.]\w{2,3}$")  # send_email.py's check_email pattern


def _send_email(pred: Inputs, gold: Inputs) -> str | None:
    """SendEmail (send_email.py): receiver stripped and lower-cased, subject and content stripped; its output is
    computed here as `send_email` does (the receiver, stripped but not lower-cased, must match its pattern)."""
    def outcome(i: Inputs) -> str:
        if not _EMAIL.match(str(i["receiver"]).strip()):
            return "Email address of the receiver is invalid."
        if not str(i["subject"]).strip():
            return "Subject cannot be empty."
        return "Content cannot be empty." if not str(i["content"]).strip() else "success"
    difference = (_stripped("receiver", lower=True)(pred, gold) or _stripped("subject", "content")(pred, gold))
    if difference is None and outcome(pred) != outcome(gold):
        return f"receiver {pred['receiver']!r}: {outcome(pred)}"
    return difference


def _play_music(pred: Inputs, gold: Inputs) -> str | None:
    """PlayMusic (play_music.py): only the output is compared, `music://` + the name lower-cased and stripped."""
    return _differs(pred, gold, ("music_name",), lambda v: str(v).lower().strip() or _Invalid())


def _keyword(*keys: str, norm: Callable[[Any], Any]) -> Check:
    """APIs whose rule compares only the output (dictionary.py, wiki.py, search_engine.py, tool_search.py): the
    output is a function of the normalised keyword, compared here (other keywords may give the same output there)."""
    def check(pred: Inputs, gold: Inputs) -> str | None:
        return _differs(pred, gold, keys, norm)
    return check


def _translate(pred: Inputs, gold: Inputs) -> str | None:
    """Translate (translate.py): `src` equal; the output (a live translation) depends on the languages, compared
    lower-cased with tgt_lang's default 'en' filled (a language name and its code may translate alike there)."""
    def languages(i: Inputs) -> tuple[Any, Any]:
        target = str(i.get("tgt_lang", "en")).lower().strip()
        source = i.get("src_lang")
        return (None if source is None else str(source).lower().strip(),
                "en" if target in ("english", "en") else target)
    if pred["src"] != gold["src"]:
        return f"src: {pred['src']!r}, gold {gold['src']!r}"
    if languages(pred) != languages(gold):
        return f"languages: {languages(pred)}, gold {languages(gold)}"
    return None


def _normalised(key: Callable[[Inputs], Any], *names: str) -> Check:
    """QueryHealthData (query_health_data.py) and QueryStock (query_stock.py): their `format_check` applied to
    both inputs, the results compared (`_health_key`, `_stock_key`)."""
    def check(pred: Inputs, gold: Inputs) -> str | None:
        if key(pred) == key(gold):
            return None
        return f"{' / '.join(names)}: {tuple(pred[n] for n in names)}, gold {tuple(gold[n] for n in names)}"
    return check


def _history(pred: Inputs, gold: Inputs) -> str | None:
    """QueryHistoryToday (query_history_today.py): the date through `filter_date_format` (%Y-%m-%d -> %m-%d)."""
    return _differs(pred, gold, ("date",), _history_date)


def _symptom(pred: Inputs, gold: Inputs) -> str | None:
    """SymptomSearch / EmergencyKnowledge (symptom_search.py, emergency_knowledge.py): stripped, lower-cased; a
    blank symptom makes the rule itself raise, scored wrong."""
    return _differs(pred, gold, ("symptom",), lambda v: str(v).strip().lower() or _Invalid())


RULES: dict[str, Check] = {
    "AddAgenda": _agenda(lower=False, location=True),
    "ModifyAgenda": _agenda(lower=False, location=True),
    "QueryAgenda": _agenda(lower=False, location=True),
    "AddReminder": _agenda(lower=True, location=False),
    "ModifyReminder": _agenda(lower=True, location=False),
    "QueryReminder": _agenda(lower=True, location=False),
    "DeleteAgenda": _delete_by_time(content_required=False),
    "DeleteReminder": _delete_by_time(content_required=True),
    "AddMeeting": _meeting, "ModifyMeeting": _meeting, "QueryMeeting": _meeting,
    "DeleteMeeting": _delete_meeting,
    "AppointmentRegistration": _appointment,
    "CancelRegistration": _stripped("appointment_id"),
    "ModifyRegistration": _modify_registration,
    "QueryRegistration": _registration_query,
    "QueryHealthData": _normalised(_health_key, "user_id", "start_time", "end_time"),
    "RecordHealthData": _health_record,
    "QueryStock": _normalised(_stock_key, "stock_code", "date"),
    "QueryHistoryToday": _history,
    "QueryScene": _stripped("name", lower=True),
    "DeleteScene": _stripped("name", lower=True),
    "TimedSwitch": _timed_switch(with_on=True),
    "CancelTimedSwitch": _timed_switch(with_on=False),
    "Calculator": lambda p, g: _differs(p, g, ("formula",), lambda v: str(v).replace(" ", "")),
    "SymptomSearch": _symptom, "EmergencyKnowledge": _symptom,
    "DocumentQA": _stripped("url", "question"),
    "SendEmail": _send_email,
    "PlayMusic": _play_music,
    "GetToday": lambda p, g: None,
    "Dictionary": _keyword("keyword", norm=lambda v: str(v).replace("_", " ").strip().lower()),
    "Wiki": _keyword("keyword", norm=lambda v: str(v).replace("_", " ").strip().lower()),
    "SearchEngine": _keyword("keyword", norm=_words),
    # The retriever embeds the keywords with sentence-transformers/paraphrase-MiniLM-L3-v2, a BertTokenizer with
    # do_lower_case (its tokenizer_config.json) that splits on white space: keywords equal in lower case up to white
    # space retrieve the same API.
    "ToolSearcher": _keyword("keywords", norm=_words),
    "Translate": _translate,
}


def check_call(api: str, pred: Inputs | None, gold: Inputs | None) -> str | None:
    """The API's rule on two executed calls (None: input None, GetToday's); None when it passes."""
    if pred is None or gold is None:
        return None if pred is gold else "input differs"
    return RULES.get(api, _exact)(pred, gold)


def official_verdict(api: str, params: dict[str, str], gold: dict[str, str], types: dict[str, str],
                     described: bool = True) -> tuple[str | None, str]:
    """(None, "") when the official evaluator accepts `api(**params)` for the gold `api(**gold)`, else (reason,
    detail). The API names are equal already; the executor runs first, then the API's rule."""
    pred_inputs, reason, detail = executed_inputs(api, params, types, described)
    if reason:
        return reason, detail
    gold_inputs, gold_reason, gold_detail = executed_inputs(api, gold, types, described, gold=True)
    if gold_reason:
        return "gold_fails_officially", f"the gold call fails the executor: {gold_detail}"
    difference = check_call(api, pred_inputs, gold_inputs)
    return (None, "") if difference is None else ("wrong_value", f"{api}: {difference}")


# ---- gold answers the official evaluator rejects ------------------------------------------------------------

_EARLIER = re.compile(r"^API-Request: \[(\w+)\((.*)\)\]->(.*)$", re.MULTILINE)
# QueryScene: issue 21 reports that the official rejects these golds for the scene name's case (`query_scene`
# looks the lower-cased name up in a Scenes database we do not have); not verified against the source.
SCENE_CASE = "QueryScene"


def earlier_calls(dialogue: str, read: Callable[[str], dict[str, str]]) -> list[tuple[str, dict[str, str], Any]]:
    """The dialogue's executed calls before the request: (API, parameters, result as a literal where it is one)."""
    out = []
    for m in _EARLIER.finditer(dialogue):
        try:
            result = ast.literal_eval(m.group(3).strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            result = m.group(3).strip()
        out.append((m.group(1), read(m.group(2)), result))
    return out


def _same_user_record(kind: str) -> Callable[[dict[str, str], dict[str, str]], bool]:
    """Whether a reader call targets the record an earlier creator call made: same token, and the fields the
    reader's lookup matches on (agenda / reminder: content or time; alarm: time; meeting: topic or start time)."""
    def match(reader: dict[str, str], creator: dict[str, str]) -> bool:
        if reader.get("token") != creator.get("token"):
            return False
        if kind == "alarm":
            return creator.get("time") in (reader.get("time"), reader.get("from_time"))
        fields = ("meeting_topic", "start_time") if kind == "meeting" else ("content", "time")
        return any(reader.get(f) is not None and reader.get(f) == creator.get(f) for f in fields)
    return match


def _same_registration(reader: dict[str, str], creator: dict[str, str], result: Any) -> bool:
    if "appointment_id" in reader:
        return reader["appointment_id"].strip() == str(result).strip()
    return (reader.get("patient_name", "").strip() == creator.get("patient_name", "").strip()
            and str(_strict_time(reader.get("date", ""), "%Y-%m-%d")) == str(_strict_time(creator.get("date", ""),
                                                                                           "%Y-%m-%d")))


# A reader API -> (the API whose earlier call creates what it reads, how to tell it reads that record).
_CREATED: dict[str, tuple[str, Callable[[dict[str, str], dict[str, str], Any], bool]]] = {
    **{api: ("AddAgenda", lambda r, c, _: _same_user_record("agenda")(r, c))
       for api in ("DeleteAgenda", "ModifyAgenda", "QueryAgenda")},
    **{api: ("AddReminder", lambda r, c, _: _same_user_record("agenda")(r, c))
       for api in ("DeleteReminder", "ModifyReminder", "QueryReminder")},
    **{api: ("AddAlarm", lambda r, c, _: _same_user_record("alarm")(r, c))
       for api in ("DeleteAlarm", "ModifyAlarm", "QueryAlarm")},
    **{api: ("AddMeeting", lambda r, c, _: _same_user_record("meeting")(r, c))
       for api in ("DeleteMeeting", "ModifyMeeting", "QueryMeeting")},
    **{api: ("AppointmentRegistration", _same_registration)
       for api in ("CancelRegistration", "ModifyRegistration", "QueryRegistration")},
    "CancelTimedSwitch": ("TimedSwitch", lambda r, c, _: (r.get("name", "").strip().lower()
                                                           == c.get("name", "").strip().lower()
                                                           and r.get("time") == c.get("time"))),
    **{api: ("AddScene", lambda r, c, _: r.get("name", "").strip().lower() == c.get("name", "").strip().lower())
       for api in ("QueryScene", "DeleteScene", "ModifyScene")},
}


def _users_by_token(earlier: list[tuple[str, dict[str, str], Any]]) -> dict[str, str]:
    return {result["token"]: params.get("username", "") for api, params, result in earlier
            if api in ("GetUserToken", "RegisterUser") and isinstance(result, dict) and "token" in result}


def state_failure(api: str, params: dict[str, str], earlier: list[tuple[str, dict[str, str], Any]]) -> str | None:
    """Why the gold call cannot give its recorded result on the fresh ToolManager the official runner builds for
    every sample (`Evaluator.evaluate`), or None. Each reason names the earlier call of the dialogue it needs."""
    if api == "ForgotPassword" and params.get("status") == "Verification Code":
        return ("ForgotPassword's second call needs the code its first call stored in the API object; a fresh "
                "one raises 'You need to call the API with status 'Forgot Password' at first.'")
    users = _users_by_token(earlier)
    if api == "GetUserToken":
        pending = ""  # the username of the last 'Forgot Password' call: the one a 'Verification Code' call changes
        for name, p, _ in earlier:
            changed = None  # whose password this earlier call set
            if name == "ForgotPassword" and p.get("status") == "Forgot Password":
                pending = p.get("username", "")
            elif name == "ForgotPassword" and p.get("status") == "Verification Code":
                changed = pending
            elif name == "ModifyPassword":
                changed = users.get(p.get("token", ""))
            if changed and changed == params.get("username") and p.get("new_password") == params.get("password"):
                return (f"the password {params.get('password')!r} was set by an earlier {name} call of the "
                        "dialogue, which the fresh database has not seen")
    if api == "RegisterUser":
        for name, p, _ in earlier:
            if name == "DeleteAccount" and users.get(p.get("token", "")) == params.get("username"):
                return (f"the user {params.get('username')!r} exists in the initial database (the dialogue "
                        "deleted it first): the fresh one raises 'The username already exists.'")
    if api in _CREATED:
        creator, targets = _CREATED[api]
        for name, p, result in earlier:
            if name == creator and targets(params, p, result):
                return (f"it reads the record an earlier {creator} call of the dialogue made, absent from the "
                        "fresh database")
    return None


def gold_failure(api: str, params: dict[str, str], types: dict[str, str], described: bool, dialogue: str,
                 read: Callable[[str], dict[str, str]]) -> str | None:
    """Why the official evaluator rejects the gold call itself (so every prediction), or None.

    The gold's own parameters failing the executor (TimedSwitch / CancelTimedSwitch golds pass `device_id`, which
    those APIs do not take); a rule no successful call passes (DeleteMeeting); QueryScene's case (issue 21,
    unverified); and dialogue state the runner resets (`state_failure`).
    """
    inputs, reason, detail = executed_inputs(api, params, types, described, gold=True)
    if reason:
        return f"the gold call fails the executor: {detail}"
    difference = check_call(api, inputs, inputs)
    if difference is not None:
        return f"the gold call fails {api}'s own check: {difference}"
    if api == SCENE_CASE:
        return ("QueryScene: issue 21 reports the official check rejects these golds for the scene name's case "
                "(query_scene looks the lower-cased name up in the Scenes database); the database is not "
                "available, so this is not verified against the source")
    return state_failure(api, params, earlier_calls(dialogue, read))
