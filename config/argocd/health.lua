-- Argo CD health check for kiln.dev/ImageBuild.
--
-- Install: Argo CD reads it from the key
-- resource.customizations.health.kiln.dev_ImageBuild of its argocd-cm
-- ConfigMap. argocd-cm-patch.yaml beside this file carries this script under
-- that key (a test keeps the two identical):
--
--   kubectl -n argocd patch configmap argocd-cm --patch-file config/argocd/argocd-cm-patch.yaml
--
-- or list argocd-cm-patch.yaml under `patches:` in the kustomization that
-- installs Argo CD (change metadata.namespace if Argo CD is not in argocd).
--
-- What it reports, in this order (the first rule that matches wins):
--
--   spec.suspend is true                      Suspended    kiln does no work
--   metadata.deletionTimestamp is set         Progressing  being deleted
--   Ready=False for this generation, not      Degraded     "Reason: message" and how kiln
--   Stalled, reason other than TransientError              retries: something outside the
--                                                          ImageBuild is missing or refused
--                                                          (SourceNotFound, BaseNotFound,
--                                                          PlatformNotFound, Unauthorized,
--                                                          PushRejected); kiln retries with
--                                                          backoff, so it turns Healthy by
--                                                          itself once that is fixed
--   status.observedGeneration ~= generation   Progressing  kiln has not concluded this spec:
--                                                          a new object reads -1 (the CRD's
--                                                          default) until built or stalled;
--                                                          Reconciling's message if it is set
--   Stalled=True                              Degraded     "Reason: message"; a spec or
--                                                          content error (InvalidSpec,
--                                                          DigestMismatch, InvalidLayer...)
--                                                          that only a change will fix
--   Reconciling=True                          Progressing  building, queued for a build
--                                                          slot, or retrying a transient
--                                                          error; the condition's message
--   Ready=True                                Healthy      the image for this spec is pushed
--   Ready=False                               Degraded     "Reason: message"
--   no Ready condition, or Ready=Unknown      Progressing  waiting for kiln
--
-- "For this generation" is the condition's observedGeneration (or, without
-- one, status.observedGeneration) equal to metadata.generation: kiln keeps
-- status.observedGeneration behind while it retries, so a spec change is
-- Progressing until kiln has tried it.
--
-- Healthy is exactly when kstatus (what Flux's `wait` reads) says Current and
-- `kubectl wait --for=condition=Ready` returns, and Degraded on Stalled is
-- kstatus' Failed. The one difference is the outside error: kiln shows it as
-- Ready=False with Reconciling=True, which kstatus calls InProgress (a Flux
-- wait times out on it) and kubectl wait keeps waiting on, where Argo CD shows
-- Degraded at once, with the reason.
--
-- Argo CD runs custom checks in a sandbox with only Lua's base, table and
-- package libraries: no string library, so this script only concatenates.
-- Numbers are compared through tonumber because Argo CD may hand a JSON
-- number to Lua as a string.

local hs = {}

local function condition(type)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

-- describe is "Reason: message", or whichever of the two is set.
local function describe(c)
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  return reason
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "suspended: kiln does no work on this ImageBuild until spec.suspend is false"
  return hs
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "being deleted"
  return hs
end

local generation = tonumber(obj.metadata.generation)
local observed = nil
if obj.status ~= nil then
  observed = tonumber(obj.status.observedGeneration)
end
local reconciling = condition("Reconciling")
local stalled = condition("Stalled")
local ready = condition("Ready")

-- forThisGeneration: c was written for the current spec.
local function forThisGeneration(c)
  local g = tonumber(c.observedGeneration)
  if g == nil then
    g = observed
  end
  return generation == nil or g == generation
end

local isStalled = stalled ~= nil and stalled.status == "True"

if ready ~= nil and ready.status == "False" and ready.reason ~= "TransientError" and
    not isStalled and forThisGeneration(ready) then
  hs.status = "Degraded"
  hs.message = describe(ready)
  if reconciling ~= nil and reconciling.status == "True" and reconciling.reason == ready.reason then
    hs.message = hs.message .. " (" .. (reconciling.message or "retrying") .. ")"
  end
  return hs
end

if generation ~= nil and observed ~= generation then
  hs.status = "Progressing"
  if reconciling ~= nil and reconciling.status == "True" then
    hs.message = describe(reconciling)
  elseif observed == nil or observed < 1 then
    hs.message = "waiting for the kiln controller to see this ImageBuild"
  else
    hs.message = "waiting for the kiln controller to see generation " .. generation ..
      " (status is for generation " .. observed .. ")"
  end
  return hs
end

if isStalled then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the kiln controller to report Ready"
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  -- A moved base tag under base.updatePolicy Report leaves the image as it
  -- is, so it stays Healthy, but says so.
  local base = condition("BaseUpToDate")
  if base ~= nil and base.status == "False" then
    hs.message = hs.message .. "; " .. describe(base)
  end
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready)
return hs
