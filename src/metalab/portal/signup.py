"""The portal's sign-up form ("Request access", no login) and Account page (change her own password), issue 19.

A request goes to the broker's ``signup.request``, which only records it (metalab.host.broker.signup: validation,
per-address and global rate limits, a cap on pending requests); an admin answers with ``labctl users approve`` or
``deny``. The password change goes to ``password.change`` (current password checked, rules applied, her other
sessions end); this session continues with the fresh ticket the broker returns.
"""

from __future__ import annotations

from typing import Any, Callable

from flask import Flask, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, Length

from metalab.brokerapi.client import BrokerClient, BrokerError
from metalab.portal.auth import Identity
from metalab.rules import MAX_EMAIL_LEN, USER_NAME_HELP, email_problem, is_user_name

MAX_REASON = 500  # as metalab.host.broker.signup.MAX_REASON (the broker checks again)
# The page's HTTP status by the broker's error code; others go to the app's error page.
SIGNUP_STATUS = {"bad-request": 400, "refused": 429}
PASSWORD_STATUS = {"invalid": 400, "bad-password": 400, "bad-request": 400, "locked": 429}


class SignupForm(FlaskForm):
    name = StringField("User name you would like", validators=[DataRequired(), Length(max=31, message=USER_NAME_HELP)])
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=MAX_EMAIL_LEN)])
    reason = TextAreaField(
        "Why (a short note for the lab admins)",
        validators=[Length(max=MAX_REASON, message=f"at most {MAX_REASON} characters")],
    )

    def problems(self) -> list[str]:
        """Clear messages for what the user typed (the broker checks everything again)."""
        fields = [(getattr(self, k).label.text, msgs) for k, msgs in self.errors.items() if k != "csrf_token"]
        out = [f"{label}: {m}" for label, msgs in fields for m in msgs]
        name = (self.name.data or "").strip()
        if name and not is_user_name(name):
            out.append(f"User name: {USER_NAME_HELP}")
        email = (self.email.data or "").strip()
        if email and email_problem(email):
            out.append(str(email_problem(email)))
        return out


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField(
        "New password again", validators=[DataRequired(), EqualTo("password", message="the new passwords differ")]
    )


def register_signup(
    app: Flask,
    broker: BrokerClient,
    login_required: Callable[[Any], Any],
    slow: Callable[[Any], Any],
    start_identity: Callable[[Identity], None],
) -> None:
    app.config["METALAB_SIGNUP"] = app.extensions["metalab"]["settings"].signup  # the login page's link

    @app.route("/signup", methods=["GET", "POST"])
    def signup() -> Any:
        if not app.config["METALAB_SIGNUP"]:
            abort(404)
        form = SignupForm()
        if request.method == "GET":
            return render_template("signup.html", form=form, errors=[], done=None)
        valid = form.validate_on_submit()
        if form.csrf_token.errors:
            return render_template("error.html", heading="This form has expired", message="reload the page"), 400
        problems = form.problems()
        if not valid or problems:
            return render_template("signup.html", form=form, errors=problems or ["check the form"], done=None), 400
        try:
            result = broker.call(
                "signup.request",
                name=(form.name.data or "").strip(),
                email=(form.email.data or "").strip(),
                reason=form.reason.data or "",
                client=request.remote_addr or "",
            )
        except BrokerError as exc:
            if exc.code not in SIGNUP_STATUS:
                raise
            return render_template("signup.html", form=form, errors=[str(exc)], done=None), SIGNUP_STATUS[exc.code]
        return render_template("signup.html", form=SignupForm(formdata=None), errors=[], done=result)

    @app.route("/account", methods=["GET", "POST"])
    @slow
    @login_required
    def account(ident: Identity) -> Any:
        form = PasswordForm()
        if request.method == "GET":
            return render_template("account.html", form=form, error=None)
        if not form.validate_on_submit():
            if form.csrf_token.errors:
                return render_template("error.html", heading="This form has expired", message="reload the page"), 400
            error = "; ".join(m for msgs in form.errors.values() for m in msgs)
            return render_template("account.html", form=form, error=error), 400
        try:
            result = broker.call(
                "password.change",
                ticket=ident.ticket,
                current=form.current.data,
                new=form.password.data,
                client=request.remote_addr or "",
            )
        except BrokerError as exc:
            if exc.code not in PASSWORD_STATUS:
                raise
            return render_template("account.html", form=form, error=str(exc)), PASSWORD_STATUS[exc.code]
        start_identity(Identity.from_broker(result))
        flash("your password is changed; your other sessions have ended", "info")
        return redirect(url_for("account"))
