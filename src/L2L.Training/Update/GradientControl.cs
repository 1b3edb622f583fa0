// One step's decision from the layers' gradient sums of squares: the global norm, the clip coefficient, skip on overflow.
using System.Globalization;

namespace L2L.Training.Update;

/// <summary>What to do with one step's gradients.</summary>
/// <param name="Skip">The gradients hold an inf or NaN under dynamic loss scaling: update no layer.</param>
/// <param name="Factor">Multiply every gradient by this before the update (1: leave them untouched).</param>
/// <param name="GradNorm">The global L2 norm of the (unscaled) gradients before clipping.</param>
public readonly record struct StepDecision(bool Skip, float Factor, double GradNorm);

/// <summary>
/// Clipping and loss scaling shared by every executor. Each layer's gradients are reduced on the device to a sum of
/// squares (which is inf or NaN when any element is); the executor hands the per-layer sums here. Every
/// parameter belongs to exactly one layer (the tied token embedding lives in the embedding layer only), so the
/// global norm counts tied weights once.
/// </summary>
public sealed class GradientControl
{
    /// <summary>The epsilon PyTorch's <c>clip_grad_norm_</c> adds to the norm.</summary>
    public const float ClipEpsilon = 1e-6f;

    private readonly long[] _layerUpdates;

    /// <summary>
    /// Creates the control for a run's options over <paramref name="layers"/> layers, restoring the loss scale, the
    /// skipped-step count and each layer's update count from <paramref name="resume"/>.
    /// </summary>
    /// <param name="clipGradNorm">The max norm of <c>--clip-grad-norm</c>, or null.</param>
    /// <param name="clipMode">Global or per-layer clipping.</param>
    /// <param name="lossScale">No scaling or dynamic scaling.</param>
    /// <param name="layers">The model's layer count.</param>
    /// <param name="resume">The checkpoint state to continue from.</param>
    /// <param name="staticScale">A static loss scale (<c>--loss-scale N</c>), or null; not together with dynamic scaling.</param>
    public GradientControl(float? clipGradNorm, ClipMode clipMode, LossScaleMode lossScale, int layers, Model.TrainingState? resume = null,
        float? staticScale = null)
    {
        if (staticScale is { } n && (!(n > 0) || !float.IsFinite(n) || lossScale == LossScaleMode.Dynamic))
            throw new ArgumentException($"A static loss scale must be a positive number and cannot be combined with dynamic scaling, not {n}.");
        StaticScale = staticScale;
        ClipGradNorm = clipGradNorm;
        ClipMode = clipMode;
        if (lossScale == LossScaleMode.Dynamic)
            Scaler = new LossScaler();
        _layerUpdates = new long[layers];
        if (resume is null)
            return;
        var metadata = resume.Metadata;
        Scaler?.Load(metadata);
        if (metadata.TryGetValue("skipped_steps", out var skipped))
            SkippedSteps = long.Parse(skipped, CultureInfo.InvariantCulture);
        if (metadata.TryGetValue("layer_updates", out var counts))
        {
            var parts = counts.Split(',');
            if (parts.Length != layers)
                throw new InvalidDataException($"The checkpoint's layer_updates has {parts.Length} entries for a model of {layers} layers.");
            for (var i = 0; i < layers; i++)
                _layerUpdates[i] = long.Parse(parts[i], CultureInfo.InvariantCulture);
        }
        else
        {
            Array.Fill(_layerUpdates, resume.Step - SkippedSteps); // every layer was updated at every step that was not skipped
        }
    }

    /// <summary>Creates the control that <paramref name="options"/> describe.</summary>
    public static GradientControl From(TrainOptions options, Model.TrainingState? resume) =>
        new(options.ClipGradNorm, options.ClipMode, options.LossScale, new Model.ModelLayout(options.Config).Layers.Count, resume, options.StaticLossScale);

    /// <summary>The max norm of <c>--clip-grad-norm</c>, or null.</summary>
    public float? ClipGradNorm { get; }

    /// <summary>Global or per-layer clipping.</summary>
    public ClipMode ClipMode { get; }

    /// <summary>The dynamic loss scaler, or null.</summary>
    public LossScaler? Scaler { get; }

    /// <summary>Steps skipped so far because their gradients overflowed (they did not advance the optimizer's step count).</summary>
    public long SkippedSteps { get; private set; }

    /// <summary>The static loss scale of <c>--loss-scale N</c>, or null.</summary>
    public float? StaticScale { get; }

    /// <summary>The factor the loss gradient is multiplied by this step (the dynamic or static loss scale, or 1).</summary>
    public float LossScale => Scaler?.Scale ?? StaticScale ?? 1f;

    /// <summary>The factor that undoes the loss scale on the gradients (1 without one).</summary>
    public float Unscale => 1f / LossScale;

    /// <summary>
    /// Whether a layer's gradients overflowed: their sum of squares (reduced on the device, in FP32) is inf or NaN,
    /// which it is whenever any element is. Such a layer must not be updated.
    /// </summary>
    public static bool LayerOverflowed(float sumOfSquares) => !float.IsFinite(sumOfSquares);

    /// <summary>Whether clipping needs the global norm before any update.</summary>
    public bool NeedsGlobalNorm => (ClipGradNorm is not null && ClipMode == ClipMode.Global) || Scaler is not null;

    /// <summary>
    /// Records that <paramref name="layer"/> is updated now and returns its 1-based optimizer step (AdamW's t): each
    /// layer counts its own updates, as PyTorch counts per parameter, so steps skipped on overflow, steps that
    /// dropped the layer (layer drop) and steps before it existed (growth) do not count.
    /// </summary>
    public long NextOptimizerStep(int layer) => ++_layerUpdates[layer];

    /// <summary>How many times <paramref name="layer"/> has been updated.</summary>
    public long UpdatesOf(int layer) => _layerUpdates[layer];

    /// <summary>
    /// The clip coefficient of PyTorch's <c>clip_grad_norm_</c> for a norm: <c>max / (norm + 1e-6)</c> in FP32,
    /// applied only when below 1.
    /// </summary>
    public static float ClipCoefficient(float maxNorm, float norm)
    {
        var coef = maxNorm / (norm + ClipEpsilon);
        return coef < 1f ? coef : 1f;
    }

    /// <summary>The global norm (unscaled) from the layers' sums of squares (of the scaled gradients), summed in double in layer order.</summary>
    public double GlobalNorm(ReadOnlySpan<float> sumsOfSquares)
    {
        var total = 0.0;
        foreach (var s in sumsOfSquares) total += s;
        return Math.Sqrt(total) / LossScale;
    }

    /// <summary>
    /// Decides the step from every layer's sum of squares (of the gradients of the scaled loss) and records it:
    /// under dynamic loss scaling an overflow skips the step and halves the scale. With global clipping the factor
    /// combines unscaling and the clip coefficient (the scale is a power of two, so this equals unscaling first).
    /// </summary>
    public StepDecision Decide(ReadOnlySpan<float> sumsOfSquares)
    {
        var scale = LossScale;
        var norm = GlobalNorm(sumsOfSquares);
        var overflow = !double.IsFinite(norm);
        Scaler?.Update(overflow);
        if (Scaler is not null && overflow)
        {
            SkippedSteps++;
            return new StepDecision(true, 0f, norm);
        }
        var factor = 1f / scale;
        if (ClipGradNorm is { } max && ClipMode == ClipMode.Global)
            factor *= ClipCoefficient(max, (float)norm);
        return new StepDecision(false, factor, norm);
    }

    /// <summary>
    /// The factor for one layer under <see cref="ClipMode.Layer"/> (its own norm), times <paramref name="stepFactor"/>;
    /// otherwise <paramref name="stepFactor"/> unchanged.
    /// </summary>
    public float LayerFactor(float layerSumOfSquares, float stepFactor)
    {
        if (ClipGradNorm is not { } max || ClipMode != ClipMode.Layer)
            return stepFactor;
        var norm = (float)(Math.Sqrt(layerSumOfSquares) * stepFactor);
        return stepFactor * ClipCoefficient(max, norm);
    }

    /// <summary>Writes the loss scaler's state and the skipped-step count into checkpoint metadata.</summary>
    public void Save(IDictionary<string, string> metadata)
    {
        Scaler?.Save(metadata);
        if (SkippedSteps > 0)
            metadata["skipped_steps"] = SkippedSteps.ToString(CultureInfo.InvariantCulture);
        metadata["layer_updates"] = string.Join(",", _layerUpdates.Select(x => x.ToString(CultureInfo.InvariantCulture)));
    }
}
