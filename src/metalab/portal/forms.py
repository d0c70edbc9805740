"""The portal's forms (Flask-WTF: every one carries a CSRF token)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp

from metalab.rules import USER_NAME

# \A...\Z, not ^...$: "$" also matches before a trailing newline, so "alice\n" would pass.
USER_PATTERN = USER_NAME.pattern


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class StartForm(FlaskForm):
    kind = SelectField("Runtime", choices=[SelectChoice("cpu", "CPU"), SelectChoice("gpu", "GPU")], default="cpu")


class ActionForm(FlaskForm):
    """A form that is only a button (stop, log out): the CSRF token is the whole point."""


class AdminStopForm(FlaskForm):
    target = StringField(validators=[DataRequired(), Regexp(USER_PATTERN)])


class AdminExtendForm(FlaskForm):
    target = StringField(validators=[DataRequired(), Regexp(USER_PATTERN)])
    duration = StringField("More time", default="1h", validators=[DataRequired(), Length(max=16)])


class EnrollForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("Again", validators=[DataRequired(), EqualTo("password", message="the passwords differ")])


class RestoreForm(FlaskForm):
    """Restore a folder of her home from one of her snapshots (the broker checks both again)."""

    snapshot = StringField("Backup", validators=[Optional(), Regexp(r"\A[0-9a-f]{4,64}\Z")])
    path = StringField("Folder", validators=[Optional(), Length(max=4096)])
