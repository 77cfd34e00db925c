"""The Access page: rules, groups, robot accounts, and "what can this user do here"."""

import logging

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from .. import access, htpasswd
from ..access_forms import (
    CheckForm,
    GroupForm,
    RobotDeleteForm,
    RobotForm,
    RuleDeleteForm,
    RuleForm,
)
from ..models import AccessGroup, AccessRule, RobotAccount
from ..registry import is_valid_repository
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


def _actor(request):
    return request.user.get_username()


def _invalid(request, form, **extra):
    messages.error(request, "Nothing was changed: correct the form below.")
    return render(request, "registry_admin/access.html", _context(request, **extra), status=400)


@require(MANAGE_USERS)
@require_POST
def rule_save(request):
    form = RuleForm(request.POST)
    if not form.is_valid():
        return _invalid(request, form, rule_form=form)
    data = form.cleaned_data
    try:
        access.grant(_actor(request), data["subject"], data["pattern"], data["actions"])
    except access.AccessError as exc:
        form.add_error(None, str(exc))
        return _invalid(request, form, rule_form=form)
    messages.success(request, f"Saved: {data['subject']} on {data['pattern']}.")
    return redirect(PAGE)


@require(MANAGE_USERS)
@require_POST
def rule_delete(request):
    form = RuleDeleteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nothing was changed: that rule does not exist.")
        return redirect(PAGE)
    data = form.cleaned_data
    if access.revoke(_actor(request), data["subject"], data["pattern"]):
        messages.success(request, f"Removed the rule for {data['subject']} on {data['pattern']}.")
    else:
        messages.error(request, "Nothing was changed: that rule does not exist.")
    return redirect(PAGE)


@require(MANAGE_USERS)
@require_POST
def group_save(request):
    form = GroupForm(request.POST)
    if not form.is_valid():
        return _invalid(request, form, group_form=form)
    try:
        access.set_group(
            _actor(request), form.cleaned_data["name"], form.cleaned_data["members"].split()
        )
    except access.AccessError as exc:
        form.add_error(None, str(exc))
        return _invalid(request, form, group_form=form)
    messages.success(request, "Saved the group.")
    return redirect(PAGE)


@require(MANAGE_USERS)
@require_POST
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


@require(MANAGE_USERS)
@require_POST
def robot_delete(request):
    form = RobotDeleteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Nothing was changed: that robot does not exist.")
        return redirect(PAGE)
    try:
        access.delete_robot(_actor(request), form.cleaned_data["username"])
    except (access.AccessError, htpasswd.CredentialsError) as exc:
        messages.error(request, f"Nothing was changed: {exc}")
        return redirect(PAGE)
    messages.success(request, f"Deleted {form.cleaned_data['username']}.")
    return redirect(PAGE)
