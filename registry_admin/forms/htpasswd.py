"""Forms of the registry users pages; the rules themselves live in htpasswd.validate_*()."""

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from .. import htpasswd

TYPED = "typed"
GENERATED = "generated"


class PasswordForm(forms.Form):
    """A typed password with its confirmation, or one generated and shown once."""

    error_messages = {"password_mismatch": "The two passwords differ."}

    mode = forms.ChoiceField(
        label="Password",
        choices=[(TYPED, "Type a password"), (GENERATED, "Generate one and show it once")],
        initial=TYPED,
        widget=forms.RadioSelect,
    )
    password1 = forms.CharField(
        label="New password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password2 = forms.CharField(
        label="New password again",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["password1"].help_text = (
            f"At least {settings.HTPASSWD_MIN_PASSWORD_LENGTH} characters and at most 72 bytes "
            "(bcrypt's limit)."
        )

    @property
    def generated(self):
        return self.cleaned_data.get("mode") == GENERATED

    def clean(self):
        data = super().clean()
        if data.get("mode") == GENERATED:
            data["password"] = htpasswd.generate_password()
        elif data.get("mode") == TYPED:
            password = data.get("password1", "")
            try:
                htpasswd.validate_password(password)
            except htpasswd.CredentialsError as exc:
                self.add_error("password1", ValidationError(str(exc), code="invalid_password"))
                return data
            if password != data.get("password2", ""):
                self.add_error(
                    "password2",
                    ValidationError(
                        self.error_messages["password_mismatch"], code="password_mismatch"
                    ),
                )
            data["password"] = password
        return data


class UserCreateForm(PasswordForm):
    error_messages = {
        **PasswordForm.error_messages,
        "exists": "A user named %(name)s exists already.",
        "service_account": (
            "%(name)s is the portal's own service account (REGISTRY_USERNAME); it is written "
            "from REGISTRY_PASSWORD or rotated with `python manage.py htpasswd rotate-service`."
        ),
    }

    username = forms.CharField(
        label="User name",
        strip=False,
        help_text="1 to 64 characters: letters, digits, '.', '_' and '-'.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    field_order = ["username", "mode", "password1", "password2"]

    def __init__(self, *args, existing=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.existing = set(existing)

    def clean_username(self):
        username = self.cleaned_data["username"]
        try:
            htpasswd.validate_username(username)
        except htpasswd.CredentialsError as exc:
            raise ValidationError(str(exc), code="invalid_username") from exc
        if username == settings.REGISTRY_USERNAME:
            raise ValidationError(
                self.error_messages["service_account"],
                code="service_account",
                params={"name": username},
            )
        if username in self.existing:
            raise ValidationError(
                self.error_messages["exists"], code="exists", params={"name": username}
            )
        return username
