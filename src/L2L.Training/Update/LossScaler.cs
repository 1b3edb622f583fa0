// Dynamic loss scaling with PyTorch GradScaler semantics, its state carried in checkpoint metadata.
using System.Globalization;

namespace L2L.Training.Update;

/// <summary>
/// The loss scale of <c>torch.amp.GradScaler</c>: starts at <see cref="InitialScale"/>; a step whose gradients hold
/// an inf or NaN is skipped and multiplies the scale by <see cref="BackoffFactor"/>; after <see cref="GrowthInterval"/>
/// consecutive good steps the scale is multiplied by <see cref="GrowthFactor"/>. Every factor is a power of two, so
/// scaling the loss and unscaling the gradients is exact in floating point (barring underflow).
/// </summary>
public sealed class LossScaler
{
    /// <summary>GradScaler's <c>init_scale</c>.</summary>
    public const float InitialScale = 65536f;
    /// <summary>GradScaler's <c>growth_factor</c>.</summary>
    public const float GrowthFactor = 2f;
    /// <summary>GradScaler's <c>backoff_factor</c>.</summary>
    public const float BackoffFactor = 0.5f;
    /// <summary>GradScaler's <c>growth_interval</c>.</summary>
    public const int GrowthInterval = 2000;

    /// <summary>The current scale.</summary>
    public float Scale { get; private set; } = InitialScale;

    /// <summary>Good steps since the last growth or overflow.</summary>
    public int GoodSteps { get; private set; }

    /// <summary>Records the outcome of a step and adjusts the scale.</summary>
    public void Update(bool overflow)
    {
        if (overflow)
        {
            Scale *= BackoffFactor;
            GoodSteps = 0;
            return;
        }
        if (++GoodSteps >= GrowthInterval)
        {
            Scale *= GrowthFactor;
            GoodSteps = 0;
        }
    }

    /// <summary>Writes the scaler's state into checkpoint metadata.</summary>
    public void Save(IDictionary<string, string> metadata)
    {
        metadata["loss_scale"] = Scale.ToString("R", CultureInfo.InvariantCulture);
        metadata["loss_scale_good_steps"] = GoodSteps.ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>Restores the state saved by <see cref="Save"/>, when present.</summary>
    public void Load(IReadOnlyDictionary<string, string> metadata)
    {
        if (metadata.TryGetValue("loss_scale", out var scale))
            Scale = float.Parse(scale, CultureInfo.InvariantCulture);
        if (metadata.TryGetValue("loss_scale_good_steps", out var good))
            GoodSteps = int.Parse(good, CultureInfo.InvariantCulture);
    }
}
