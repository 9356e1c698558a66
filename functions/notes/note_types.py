"""NOM-004 note types: their LOINC document codes and the sections each must contain.

The document codes are LOINC (``../shared/design/domain.md``; the nursing note's 28623-7 "Nurse
Progress note" is from HL7's LOINC Document Ontology value set). Sections are coded in
Expediente's own code system, because NOM-004 names contents that LOINC section codes do not
match one to one (e.g. "antecedentes personales no patológicos", "pronóstico"); no LOINC
section code is invented here. A section counts as present when it has text, entries, or an
``emptyReason`` (FHIR's way to say "nothing to record", e.g. no results yet); a diagnoses
section needs at least one coded ``Condition``.
"""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
SECTION_SYSTEM = "https://expediente.mx/fhir/CodeSystem/seccion-nota"
NOTE_KIND_SYSTEM = "https://expediente.mx/fhir/CodeSystem/tipo-nota"

# section code -> (Spanish title, entry resource types the section may hold)
SECTIONS: dict[str, tuple[str, frozenset[str]]] = {
    "antecedentes-heredofamiliares": ("Antecedentes heredofamiliares", frozenset()),
    "antecedentes-personales-patologicos": ("Antecedentes personales patológicos", frozenset({"Condition"})),
    "antecedentes-personales-no-patologicos": ("Antecedentes personales no patológicos", frozenset()),
    "padecimiento-actual": ("Padecimiento actual", frozenset()),
    "interrogatorio-aparatos-sistemas": ("Interrogatorio por aparatos y sistemas", frozenset()),
    "resumen-interrogatorio": ("Resumen del interrogatorio", frozenset()),
    "exploracion-fisica": ("Exploración física", frozenset({"Observation"})),
    "estado-mental": ("Estado mental", frozenset()),
    "signos-vitales": ("Signos vitales", frozenset({"Observation"})),
    "resultados": ("Resultados de estudios", frozenset({"Observation", "DiagnosticReport"})),
    "diagnosticos": ("Diagnósticos o problemas clínicos", frozenset({"Condition"})),
    "pronostico": ("Pronóstico", frozenset()),
    "tratamiento": ("Tratamiento e indicaciones", frozenset({"MedicationRequest"})),
    "ordenes": ("Estudios solicitados", frozenset({"ServiceRequest"})),
    "evolucion": ("Evolución y actualización del cuadro clínico", frozenset()),
    "motivo-interconsulta": ("Motivo de la interconsulta", frozenset()),
    "criterios-diagnosticos": ("Criterios diagnósticos", frozenset()),
    "plan-estudio": ("Plan de estudio", frozenset({"ServiceRequest"})),
    "sugerencias": ("Sugerencias diagnósticas y de tratamiento", frozenset()),
    "motivo-atencion": ("Motivo de la atención", frozenset()),
    "resumen": ("Resumen del interrogatorio, exploración física y estado mental", frozenset()),
    "motivo-egreso": ("Motivo del egreso", frozenset()),
    "diagnosticos-finales": ("Diagnósticos finales", frozenset({"Condition"})),
    "resumen-evolucion": ("Resumen de la evolución y el estado actual", frozenset()),
    "manejo": ("Manejo durante la estancia", frozenset()),
    "problemas-pendientes": ("Problemas clínicos pendientes", frozenset({"Condition"})),
    "factores-riesgo": ("Factores de riesgo", frozenset()),
    "plan": ("Plan de manejo y recomendaciones", frozenset({"MedicationRequest", "ServiceRequest"})),
    "causa-muerte": ("Causa de muerte", frozenset({"Condition"})),
    "observaciones-enfermeria": ("Observaciones de enfermería", frozenset()),
    "procedimientos-enfermeria": ("Procedimientos y ministración de medicamentos", frozenset()),
    "motivo-addendum": ("Motivo de la corrección", frozenset()),
}
DIAGNOSIS_SECTIONS = frozenset({"diagnosticos", "diagnosticos-finales"})
VITAL_SIGNS = "signos-vitales"
WEIGHT, HEIGHT = "29463-7", "8302-2"


@dataclass(frozen=True)
class NoteType:
    """One kind of note: what it is called, its LOINC code, what it must contain and who signs it."""

    kind: str
    loinc: str
    loinc_display: str
    title: str
    required: tuple[str, ...]
    signed_by: frozenset[str] = frozenset({"physician"})
    vital_signs_must_include: tuple[str, ...] = ()
    reply: bool = False  # the reply of an interconsulta: must answer a signed request

    def coding(self) -> dict[str, str]:
        return {"system": LOINC, "code": self.loinc, "display": self.loinc_display}

    def category(self) -> dict[str, object]:
        return {"coding": [{"system": NOTE_KIND_SYSTEM, "code": self.kind, "display": self.title}]}


NOTE_TYPES: dict[str, NoteType] = {t.kind: t for t in (
    NoteType("historia-clinica", "34117-2", "History and physical note", "Historia clínica", (
        "antecedentes-heredofamiliares", "antecedentes-personales-patologicos",
        "antecedentes-personales-no-patologicos", "padecimiento-actual", "interrogatorio-aparatos-sistemas",
        "exploracion-fisica", "signos-vitales", "resultados", "diagnosticos", "pronostico", "tratamiento"),
        vital_signs_must_include=(WEIGHT, HEIGHT)),
    NoteType("ingreso", "47039-3", "Hospital Admission history and physical note", "Nota de ingreso", (
        "signos-vitales", "resumen-interrogatorio", "exploracion-fisica", "estado-mental", "resultados",
        "diagnosticos", "tratamiento", "pronostico")),
    NoteType("evolucion", "11506-3", "Progress note", "Nota de evolución", (
        "evolucion", "signos-vitales", "resultados", "diagnosticos", "pronostico", "tratamiento")),
    NoteType("interconsulta-solicitud", "11488-4", "Consult note", "Solicitud de interconsulta", (
        "motivo-interconsulta", "diagnosticos")),
    NoteType("interconsulta-respuesta", "11488-4", "Consult note", "Nota de interconsulta", (
        "criterios-diagnosticos", "plan-estudio", "sugerencias", "diagnosticos"), reply=True),
    NoteType("urgencias", "34111-1", "Emergency department note", "Nota de urgencias", (
        "motivo-atencion", "signos-vitales", "resumen", "resultados", "diagnosticos", "tratamiento",
        "pronostico")),
    NoteType("egreso", "18842-5", "Discharge summary", "Nota de egreso", (
        "motivo-egreso", "diagnosticos-finales", "resumen-evolucion", "manejo", "problemas-pendientes",
        "factores-riesgo", "plan", "pronostico")),
    NoteType("enfermeria", "28623-7", "Nurse Progress note", "Nota de enfermería", (
        "signos-vitales", "observaciones-enfermeria"), signed_by=frozenset({"nurse", "physician"})),
)}
# Notes that need an inpatient stay (admission and discharge dates, NOM-004 8.1 and 8.9).
INPATIENT_ONLY = frozenset({"ingreso", "egreso"})
