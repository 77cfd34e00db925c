"""The Access page: rules, groups, robot accounts, and "what can this user do here"."""

import logging

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import access, htpasswd
from ..forms.access import (
    CheckForm,
    GroupForm,
    RobotDeleteForm,
    RobotForm,
    RuleDeleteForm,
    RuleForm,
)
from ..models import AccessGroup, AccessRule, RobotAccount
from ..references import is_valid_repository
from ..roles import MANAGE_USERS, require

logger = logging.getLogger(__name__)

PAGE = "registry_admin:access"


def _context(request, **extra):
    check_form = CheckForm(request.GET if "repository" in request.GET else None)
    answer = None
    if check_form.is_bound and check_form.is_valid():
        repository = check_form.cleaned_data["repository"].strip()
        user = check_form.cleaned_data["user"].strip()
        if not is_valid_repository(repository):
            check_form.add_error("repository", "Not a valid repository name.")
        elif user and not htpasswd.USERNAME_RE.fullmatch(user):
            check_form.add_error("user", "Not a registry user name.")
        else:
            principal = access.principal_for(user)
            robot = RobotAccount.objects.filter(username=user).first() if user else None
            answer = {
                "user": user,
                "repository": repository,
                "decision": access.decide(principal, repository),
                "groups": principal.groups,
                "expired": bool(robot and robot.expires_at <= timezone.now()),
            }
    context = {
        "mode": settings.REGISTRY_AUTH_MODE,
        "rules": AccessRule.objects.all(),
        "groups": AccessGroup.objects.all(),
        "robots": RobotAccount.objects.all(),
        "now": timezone.now(),
        "service_account": settings.REGISTRY_USERNAME,
        "check_form": check_form,
        "answer": answer,
        "rule_form": RuleForm(),
        "group_form": GroupForm(),
        "robot_form": RobotForm(),
    }
    context.update(extra)
    return context


@never_cache
def access_page(request):
    return render(request, "registry_admin/access.html", _context(request))


def _admin_post(view):
    """A POST that changes access rules, groups or robots: admins only."""
    return require(MANAGE_USERS)(require_POST(view))


def _actor(request):
    return request.user.get_username()


def _invalid(request, form, **extra):
    messages.error(request, "Nothing was changed: correct the form below.")
    return render(request, "registry_admin/access.html", _context(request, **extra), status=400)


@_admin_post
def rule_save(request):
    def save(data):
        access.grant(_actor(request), data["subject"], data["pattern"], data["actions"])
        return f"Saved: {data['subject']} on {data['pattern']}."

    return _change(request, RuleForm(request.POST), "rule_form", save)


@_admin_post
def rule_delete(request):
    def remove(data):
        if not access.revoke(_actor(request), data["subject"], data["pattern"]):
            raise access.AccessError("that rule does not exist.")
        return f"Removed the rule for {data['subject']} on {data['pattern']}."

    return _remove(request, RuleDeleteForm(request.POST), "rule", remove)


@_admin_post
def group_save(request):
    def save(data):
        access.set_group(_actor(request), data["name"], data["members"].split())
        return "Saved the group."

    return _change(request, GroupForm(request.POST), "group_form", save)


def _change(request, form, form_name, change):
    """Apply `change(cleaned_data)` (it returns the success message) and go back to the page,
    or show the page again with the form and why nothing was changed."""
    if form.is_valid():
        try:
            message = change(form.cleaned_data)
        except access.AccessError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, message)
            return redirect(PAGE)
    return _invalid(request, form, **{form_name: form})


@_admin_post
@never_cache
def robot_create(request):
    form = RobotForm(request.POST)
    if not form.is_valid():
        return _invalid(request, form, robot_form=form)
    data = form.cleaned_data
    try:
        robot, password = access.create_robot(
            _actor(request), data["name"], data["days"], data["description"]
        )
    except (access.AccessError, htpasswd.CredentialsError) as exc:
        form.add_error(None, str(exc))
        return _invalid(request, form, robot_form=form)
    # Rendered, never redirected: the password must not outlive this one answer.
    return render(
        request,
        "registry_admin/users/password_once.html",
        {
            "name": robot.username,
            "password": password,
            "message": f"Created the robot account {robot.username}, valid until "
            f"{robot.expires_at:%Y-%m-%d %H:%M} UTC. Give it rules on the Access page.",
        },
    )


@_admin_post
def robot_delete(request):
    def remove(data):
        access.delete_robot(_actor(request), data["username"])
        return f"Deleted {data['username']}."

    return _remove(request, RobotDeleteForm(request.POST), "robot", remove)


def _remove(request, form, what, remove):
    """Apply `remove(cleaned_data)` (it returns the success message), then back to the page."""
    if not form.is_valid():
        messages.error(request, f"Nothing was changed: that {what} does not exist.")
        return redirect(PAGE)
    try:
        messages.success(request, remove(form.cleaned_data))
    except (access.AccessError, htpasswd.CredentialsError) as exc:
        messages.error(request, f"Nothing was changed: {exc}")
    return redirect(PAGE)
