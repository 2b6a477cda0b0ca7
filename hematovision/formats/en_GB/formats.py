"""British English as Django has it, but times on the 24-hour clock, as laboratories write them ("14:05",
not "2:05 p.m."). The other settings (dates, separators, input formats) come from Django's en_GB."""

TIME_FORMAT = "H:i"
DATETIME_FORMAT = "j M Y, H:i"
SHORT_DATETIME_FORMAT = "d/m/Y H:i"
