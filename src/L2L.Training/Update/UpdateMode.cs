// When the param server applies a layer's update, and how gradients are clipped and loss-scaled.
namespace L2L.Training.Update;

/// <summary>When a host-updated layer is updated.</summary>
public enum UpdateMode
{
    /// <summary>As soon as its gradients are on the host, overlapped with the backward pass of the layers below.</summary>
    Eager,
    /// <summary>
    /// After backward, when the global gradient norm and the overflow flag are known; in forward order, each
    /// overlapped with the next step's forward of the layers before it. Needed by global clipping and dynamic loss scaling.
    /// </summary>
    Deferred,
}

/// <summary>Which norm <c>--clip-grad-norm</c> clips by.</summary>
public enum ClipMode
{
    /// <summary>PyTorch's <c>clip_grad_norm_</c>: one coefficient from the norm over every gradient of the model (needs deferred updates).</summary>
    Global,
    /// <summary>Each layer by the norm of its own gradients (works with eager updates).</summary>
    Layer,
}

/// <summary>How the loss is scaled before backward.</summary>
public enum LossScaleMode
{
    /// <summary>No scaling.</summary>
    None,
    /// <summary>PyTorch <c>GradScaler</c> semantics: skip a step whose gradients overflow and halve the scale; double it after a run of good steps.</summary>
    Dynamic,
}
