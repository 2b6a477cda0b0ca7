"""Why a cell is flagged, in words a reviewer can act on.

The predictor flags a cell with reason codes ("low_confidence", "out_of_distribution", "not_a_cell",
"unfamiliar_imaging"). A prediction that stores its codes (`Prediction.flag_reasons`) is explained from them; an
older one is explained from what it does store (confidence, out-of-distribution score) against its model
version's thresholds, the same rule the predictor applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext as _

LOW_CONFIDENCE = "low_confidence"
OUT_OF_DISTRIBUTION = "out_of_distribution"
NOT_A_CELL = "not_a_cell"
UNFAMILIAR_IMAGING = "unfamiliar_imaging"
UNVALIDATED_CASE = "unvalidated_case"


@dataclass(frozen=True)
class FlagReason:
    code: str
    title: str
    sentence: str


def _percent(value: float | None) -> str:
    return _("unknown") if value is None else f"{100.0 * value:.0f}%"


def _number(value: float | None) -> str:
    return _("unknown") if value is None else f"{value:.2f}"


def _sentence(code: str, prediction) -> FlagReason:
    version = prediction.model_version
    if code == LOW_CONFIDENCE:
        return FlagReason(
            code,
            _("Low confidence"),
            _(
                "The model is unsure: its confidence in “%(label)s” is %(confidence)s, below the %(threshold)s this "
                "model version needs to call a cell. Look at the runner-up classes before confirming."
            )
            % {
                "label": prediction.label,
                "confidence": _percent(prediction.confidence),
                "threshold": _percent(version.confidence_threshold),
            },
        )
    if code == OUT_OF_DISTRIBUTION:
        return FlagReason(
            code,
            _("Unlike the training images"),
            _(
                "This image looks unlike the cells the model learned from (out-of-distribution score %(score)s, "
                "above the limit %(limit)s): staining, magnification, focus or the kind of cell may differ, so the "
                "label is less trustworthy."
            )
            % {"score": _number(prediction.ood_score), "limit": _number(version.ood_threshold)},
        )
    if code == NOT_A_CELL:
        return FlagReason(
            code,
            _("Maybe not a cell"),
            _(
                "The model does not see a single white blood cell here: it may be debris, a clump, an empty area or "
                "a cut-off cell. Mark it as an artefact if so."
            ),
        )
    if code == UNFAMILIAR_IMAGING:
        return FlagReason(
            code,
            _("Imaged unlike the training laboratories"),
            _(
                "The picture's colours, stain, sharpness or noise differ from every laboratory the model was trained "
                "on (another microscope, camera or staining), so the label is less trustworthy. Check it by eye."
            ),
        )
    if code == UNVALIDATED_CASE:
        return FlagReason(
            code,
            _("In a case imaged unlike the training laboratories"),
            _(
                "Many cells of this case look unlike the images the model was trained on, so the model is not "
                "validated for this case: even the cells it did not flag on their own need checking by eye."
            ),
        )
    return FlagReason(
        code, code.replace("_", " ").capitalize(), _("The model flagged this cell (%(code)s).") % {"code": code}
    )


def flag_reason_codes(prediction) -> list[str]:
    if prediction is None:
        return []
    stored = getattr(prediction, "flag_reasons", None)
    if stored:
        return list(stored)
    if not prediction.flagged:
        return []
    version = prediction.model_version
    codes = []
    if prediction.confidence < version.confidence_threshold:
        codes.append(LOW_CONFIDENCE)
    if (
        prediction.ood_score is not None
        and version.ood_threshold is not None
        and prediction.ood_score > version.ood_threshold
    ):
        codes.append(OUT_OF_DISTRIBUTION)
    return codes


def flag_reasons(prediction) -> list[FlagReason]:
    """The reasons in words; a flagged prediction whose reason cannot be told gets one general sentence."""
    reasons = [_sentence(code, prediction) for code in flag_reason_codes(prediction)]
    if not reasons and prediction is not None and prediction.flagged:
        reasons.append(
            FlagReason(
                "flagged", _("Needs review"), _("The model flagged this cell as unidentified; review it by eye.")
            )
        )
    return reasons
