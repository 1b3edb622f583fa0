// One step's decision from the layers' gradient sums of squares: the global norm, the clip coefficient, skip on overflow.
using System.Globalization;

namespace L2L.Training.Update;

/// <summary>What to do with one step's gradients.</summary>
/// <param name="Skip">
/// The gradients hold an inf or NaN under dynamic loss scaling, or under a static scale with global clipping (whose
/// norm an overflow makes meaningless): update no layer.
/// </param>
/// <param name="Factor">Multiply every gradient by this before the update (1: leave them untouched).</param>
/// <param name="GradNorm">The global L2 norm of the (unscaled) gradients before clipping.</param>
public readonly record struct StepDecision(bool Skip, float Factor, double GradNorm);

/// <summary>
/// Clipping and loss scaling shared by every executor. Each layer's gradients are reduced on the device to a sum of
/// squares (which is inf or NaN when any element is); the executor hands the per-layer sums here. Every
/// parameter belongs to exactly one layer (the tied token embedding lives in the embedding layer only), so the
/// global norm counts tied weights once.
/// </summary>
/// <remarks>
/// <para>A static loss scale S (<see cref="StaticLossScale"/>) multiplies the loss gradient by S; every layer's factor
/// (<see cref="LayerFactor(float)"/>, or <see cref="Decide"/>'s) multiplies its gradients by 1/S on the host, after they
/// are widened to FP32. It needs no global check, so it works with eager updates: overflow is handled per layer. A
/// layer whose sum of squares is not finite (<see cref="LayerOverflowed"/>) is not updated; the executor drops its
/// gradients, calls <see cref="ReportOverflow"/> and does not call <see cref="NextOptimizerStep"/> for it, so its
/// update count (AdamW's t) does not advance; the other layers are updated as usual. Once per step the executor takes
/// the list with <see cref="TakeOverflowedLayers"/> to report it. Only global clipping, whose norm an overflow makes
/// meaningless, skips the whole step on overflow (as dynamic scaling does; the static scale stays).</para>
/// </remarks>
public sealed class GradientControl
{
    /// <summary>The epsilon PyTorch's <c>clip_grad_norm_</c> adds to the norm.</summary>
    public const float ClipEpsilon = 1e-6f;

    /// <summary>Checkpoint metadata keys of the static loss scale and of the layer updates dropped on overflow.</summary>
    public const string LossScaleKey = "loss_scale", OverflowedLayerUpdatesKey = "overflowed_layer_updates";

    private readonly long[] _layerUpdates;
    private readonly List<int> _overflowed = [];

    /// <summary>
    /// Creates the control for a run's options over <paramref name="layers"/> layers, restoring the loss scale, the
    /// skipped-step count and each layer's update count from <paramref name="resume"/>.
    /// </summary>
    /// <param name="clipGradNorm">The max norm of <c>--clip-grad-norm</c>, or null.</param>
    /// <param name="clipMode">Global or per-layer clipping.</param>
    /// <param name="lossScale">None or dynamic (a static scale is <paramref name="staticLossScale"/>, with <see cref="LossScaleMode.None"/>).</param>
    /// <param name="layers">The model's layer count.</param>
    /// <param name="resume">The checkpoint to continue from.</param>
    /// <param name="staticLossScale">A fixed loss scale (positive and finite), or null.</param>
    /// <exception cref="ArgumentException">A static scale that is not positive and finite, or one combined with dynamic scaling.</exception>
    /// <exception cref="InvalidDataException">The checkpoint was trained with another loss scale.</exception>
    public GradientControl(float? clipGradNorm, ClipMode clipMode, LossScaleMode lossScale, int layers, Model.TrainingState? resume = null,
        float? staticLossScale = null)
    {
        ClipGradNorm = clipGradNorm;
        ClipMode = clipMode;
        if (staticLossScale is { } fixedScale)
        {
            if (!(fixedScale > 0f) || !float.IsFinite(fixedScale))
                throw new ArgumentException($"--loss-scale {fixedScale} must be a positive finite number.", nameof(staticLossScale));
            if (lossScale == LossScaleMode.Dynamic)
                throw new ArgumentException("A loss scale is either static (a number) or dynamic, not both.", nameof(staticLossScale));
            StaticLossScale = fixedScale;
        }
        if (lossScale == LossScaleMode.Dynamic)
            Scaler = new LossScaler();
        _layerUpdates = new long[layers];
        if (resume is null)
            return;
        var metadata = resume.Metadata;
        Scaler?.Load(metadata);
        if (StaticLossScale is { } scale)
            CheckResumedScale(metadata, scale);
        if (metadata.TryGetValue(OverflowedLayerUpdatesKey, out var dropped))
            OverflowedLayerUpdates = long.Parse(dropped, CultureInfo.InvariantCulture);
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

    /// <summary>A resumed static scale must be the checkpoint's: a dynamic scaler's state or another static scale is refused.</summary>
    private static void CheckResumedScale(IReadOnlyDictionary<string, string> metadata, float scale)
    {
        if (!metadata.TryGetValue(LossScaleKey, out var saved))
            return;
        var text = scale.ToString("R", CultureInfo.InvariantCulture);
        if (metadata.ContainsKey("loss_scale_good_steps"))
            throw new InvalidDataException($"The checkpoint was trained with dynamic loss scaling (scale {saved}); resume with --loss-scale dynamic, not --loss-scale {text}.");
        if (float.Parse(saved, CultureInfo.InvariantCulture) != scale)
            throw new InvalidDataException($"The checkpoint was trained with --loss-scale {saved}; resume with --loss-scale {saved}, not {text}.");
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

    /// <summary>The static loss scale, or null.</summary>
    public float? StaticLossScale { get; }

    /// <summary>Layer updates dropped so far because that layer's gradients overflowed (static loss scale).</summary>
    public long OverflowedLayerUpdates { get; private set; }

    /// <summary>Steps skipped so far because their gradients overflowed (they did not advance the optimizer's step count).</summary>
    public long SkippedSteps { get; private set; }

    /// <summary>The factor the loss gradient is multiplied by this step (the dynamic or static loss scale, or 1).</summary>
    public float LossScale => Scaler?.Scale ?? StaticLossScale ?? 1f;

    /// <summary>The factor that undoes the loss scale on the gradients: <c>1 / </c><see cref="LossScale"/> (exactly 1 without one).</summary>
    public float Unscale => 1f / LossScale;

    /// <summary>Whether clipping needs the global norm before any update.</summary>
    public bool NeedsGlobalNorm => (ClipGradNorm is not null && ClipMode == ClipMode.Global) || Scaler is not null;

    /// <summary>
    /// Records that <paramref name="layer"/> is updated now and returns its 1-based optimizer step (AdamW's t): each
    /// layer counts its own updates, as PyTorch counts per parameter, so steps skipped on overflow, steps that
    /// dropped the layer (layer drop) and steps before it existed (growth) do not count.
    /// </summary>
    /// <exception cref="InvalidOperationException">The layer was reported overflowed this step (<see cref="ReportOverflow"/>).</exception>
    public long NextOptimizerStep(int layer)
    {
        lock (_overflowed)
        {
            if (_overflowed.Contains(layer))
                throw new InvalidOperationException($"Layer {layer} overflowed this step; it is not updated, so its optimizer step does not advance.");
        }
        return ++_layerUpdates[layer];
    }

    /// <summary>Whether a layer's gradients overflowed: their sum of squares (as the device reduces it) is inf or NaN.</summary>
    public bool LayerOverflowed(float sumOfSquares) => !float.IsFinite(sumOfSquares);

    /// <summary>
    /// Records that <paramref name="layer"/>'s gradients overflowed this step and that it is not updated (its update
    /// count stays; <see cref="NextOptimizerStep"/> refuses it until <see cref="TakeOverflowedLayers"/>). Thread-safe.
    /// </summary>
    public void ReportOverflow(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, _layerUpdates.Length);
        lock (_overflowed)
        {
            if (_overflowed.Contains(layer))
                return;
            _overflowed.Add(layer);
            OverflowedLayerUpdates++;
        }
    }

    /// <summary>The layers reported overflowed since the last call, in report order, and a fresh list for the next step (call once per step).</summary>
    public IReadOnlyList<int> TakeOverflowedLayers()
    {
        lock (_overflowed)
        {
            var taken = _overflowed.ToArray();
            _overflowed.Clear();
            return taken;
        }
    }

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
    /// under dynamic loss scaling an overflow skips the step and halves the scale; under a static scale it skips the
    /// step only with global clipping (otherwise the executor drops just the overflowed layers, see
    /// <see cref="LayerOverflowed"/>). With global clipping the factor combines unscaling and the clip coefficient
    /// (for a power-of-two scale this equals unscaling first).
    /// </summary>
    public StepDecision Decide(ReadOnlySpan<float> sumsOfSquares)
    {
        var scale = LossScale;
        var norm = GlobalNorm(sumsOfSquares);
        var overflow = !double.IsFinite(norm);
        Scaler?.Update(overflow);
        var globalClip = ClipGradNorm is not null && ClipMode == ClipMode.Global;
        if (overflow && (Scaler is not null || (StaticLossScale is not null && globalClip)))
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

    /// <summary>
    /// An eagerly updated layer's factor from its own sum of squares (of the scaled gradients), with no step-wide
    /// decision: <c>1 / </c><see cref="LossScale"/> (exactly 1 without a scale), times its clip coefficient under
    /// <see cref="ClipMode.Layer"/> (from its unscaled norm). The param server applies it in FP32 after widening.
    /// </summary>
    public float LayerFactor(float layerSumOfSquares) => LayerFactor(layerSumOfSquares, 1f / LossScale);

    /// <summary>Writes the loss scaler's state (or the static scale), the skipped-step and dropped-update counts into checkpoint metadata.</summary>
    public void Save(IDictionary<string, string> metadata)
    {
        Scaler?.Save(metadata);
        if (StaticLossScale is { } scale)
            metadata[LossScaleKey] = scale.ToString("R", CultureInfo.InvariantCulture);
        if (OverflowedLayerUpdates > 0)
            metadata[OverflowedLayerUpdatesKey] = OverflowedLayerUpdates.ToString(CultureInfo.InvariantCulture);
        if (SkippedSteps > 0)
            metadata["skipped_steps"] = SkippedSteps.ToString(CultureInfo.InvariantCulture);
        metadata["layer_updates"] = string.Join(",", _layerUpdates.Select(x => x.ToString(CultureInfo.InvariantCulture)));
    }
}
